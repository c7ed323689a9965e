"""The anonymizer's choices that the command line declares: importing this loads no pydicom
(every command's start-up imports the CLI modules, and pydicom with numpy costs 0.2 s)."""

from __future__ import annotations

from enum import StrEnum


class BurnedIn(StrEnum):
    """What to do with images that may show burned-in text (`--burned-in`)."""

    REFUSE = "refuse"
    WARN = "warn"
    ALLOW = "allow"
