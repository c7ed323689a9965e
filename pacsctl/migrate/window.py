"""`--window 19:00-07:00`: the hours of the day a migration may move studies (local time; a
window whose end is before its start runs over midnight)."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from pacsctl.errors import UsageError

_SPEC = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(frozen=True)
class Window:
    """A daily time window [start, end)."""

    start: dt.time
    end: dt.time

    @classmethod
    def parse(cls, spec: str) -> Window:
        """`HH:MM-HH:MM`; raises UsageError otherwise."""
        match = _SPEC.match(spec)
        if not match:
            raise UsageError(f"invalid window {spec!r}", hint="write HH:MM-HH:MM, e.g. 19:00-07:00")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise UsageError(f"invalid window {spec!r}", hint="hours 00-23, minutes 00-59")
        if (h1, m1) == (h2 % 24, m2):
            raise UsageError(f"empty window {spec!r}", hint="start and end must differ")
        return cls(dt.time(h1, m1), dt.time(h2 % 24, m2))

    def contains(self, moment: dt.datetime) -> bool:
        """Whether `moment` (its time of day) is inside the window."""
        t = moment.time()
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def seconds_until_open(self, moment: dt.datetime) -> float:
        """0 inside the window, else the seconds until it next opens."""
        if self.contains(moment):
            return 0.0
        opening = moment.replace(hour=self.start.hour, minute=self.start.minute, second=0, microsecond=0)
        if opening <= moment:
            opening += dt.timedelta(days=1)
        return (opening - moment).total_seconds()

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"
