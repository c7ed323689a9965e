"""The proof a study arrived: DEST answers an IMAGE-level C-FIND with every SOP Instance UID
the source listed for it (UIDs compared, not counts; a peer's final C-MOVE status alone is never
trusted). Some sources answer Success before the last instance went out, so DEST is asked again
while instances keep arriving, up to `settle` seconds without progress."""

from __future__ import annotations

import time
from collections.abc import Callable

from pacsctl.migrate.listing import StudyContents
from pacsctl.net.cancel import Cancellation


def held_at(
    list_dest: Callable[[str], StudyContents],
    expected: StudyContents,
    settle: float = 5.0,
    poll: float = 0.5,
    cancel: Cancellation | None = None,
) -> StudyContents:
    """What DEST holds of the study (`list_dest(study_uid)` asks it) once it holds all of
    `expected`, or once `settle` seconds passed without a new instance (then some are missing:
    `expected.missing_from(result)`). `settle` 0 asks once."""
    last_count, last_change = -1, time.monotonic()
    while True:
        held = list_dest(expected.study_uid)
        missing = len(expected.missing_from(held))
        now = time.monotonic()
        if missing == 0 or settle <= 0 or (cancel is not None and cancel.requested):
            return held
        if missing != last_count:
            last_count, last_change = missing, now
        elif now - last_change >= settle:
            return held
        time.sleep(poll)
