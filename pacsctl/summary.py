"""The closing summary record that action commands print last (`"type": "summary"` in --json)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any


class SummaryRecord:
    """Mixin for a summary dataclass: its fields as a JSON-ready dict, `elapsed` to the millisecond."""

    def as_dict(self) -> dict[str, Any]:
        record = asdict(self)  # type: ignore[call-overload]
        if "elapsed" in record:
            record["elapsed"] = round(record["elapsed"], 3)
        return record
