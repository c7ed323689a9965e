"""Options and arguments shared by the commands, declared once as typed `Annotated` aliases.

A command declares ``as_json: JsonRecords = False`` instead of repeating ``typer.Option(...)``;
choices are enums, so `--help` and the completion scripts list them. Value metavars name what
is expected (``N``, ``AET``, ``NODE``) and flags show none (typer would print ``<bool>``).
"""

from __future__ import annotations

from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Optional

import typer

from pacsctl.archive.audit import AuditEvent
from pacsctl.config import OnConflict, SettingKey

NO_METAVAR = ""  # a flag takes no value: show no type for it


def choices(enum: type[Enum]) -> str:
    """The metavar of a choice option: its values, ``a|b|c``."""
    return "|".join(str(member.value) for member in enum)


class LevelName(StrEnum):
    """`--level` as users type it; `query_level` is the DICOM Query/Retrieve level."""

    PATIENT = "patient"
    STUDY = "study"
    SERIES = "series"
    INSTANCE = "instance"
    IMAGE = "image"  # DICOM's name for the instance level, accepted as it always was

    @property
    def query_level(self):  # -> QueryLevel (imported here: matching is not needed for --help)
        """The DICOM level: PATIENT, STUDY, SERIES or IMAGE."""
        from pacsctl.dicom.matching import level_from_name

        return level_from_name(self.value)


class DecompressPolicy(StrEnum):
    """`send --decompress`: the values of `net.sending.Decompress` (not imported here: it
    loads pydicom, which `--help` must not pay for)."""

    NEVER = "never"
    LOSSLESS = "lossless"
    LOSSY = "lossy"


# Output formats.
JsonRecords = Annotated[
    bool,
    typer.Option(
        "--json", metavar=NO_METAVAR, help="NDJSON on stdout, one record per line, keyed by DICOM keywords."
    ),
]
JsonReport = Annotated[
    bool, typer.Option("--json", metavar=NO_METAVAR, help="NDJSON: one record per problem, then a summary.")
]
JsonSummary = Annotated[
    bool,
    typer.Option(
        "--json",
        metavar=NO_METAVAR,
        help="NDJSON: one record per item that failed or was left out, then a summary.",
    ),
]
Csv = Annotated[bool, typer.Option("--csv", metavar=NO_METAVAR, help="CSV with a header row.")]

# Selections.
Keys = Annotated[
    list[str],
    typer.Option(
        "--key",
        "-k",
        metavar="KEY=VALUE",
        help="Filter on a DICOM keyword with DICOM matching: wildcards * ?, ranges 20240101-20240331, "
        "UID lists a\\b (repeatable).",
    ),
]
Level = Annotated[
    LevelName,
    typer.Option(
        "--level", "-l", metavar=choices(LevelName), case_sensitive=False, help="Query/Retrieve level."
    ),
]
RetrieveLevel = Annotated[
    LevelName,
    typer.Option(
        "--level",
        "-l",
        metavar=choices(LevelName),
        case_sensitive=False,
        help="Retrieve whole patients, studies, series or instances.",
    ),
]
Studies = Annotated[
    list[str],
    typer.Option("--study", metavar="UID", help="This study (its Study Instance UID; repeatable)."),
]
All = Annotated[
    bool,
    typer.Option("--all", metavar=NO_METAVAR, help="Allow an empty selection (everything the node holds)."),
]

DecompressOpt = Annotated[
    DecompressPolicy,
    typer.Option(
        "--decompress",
        metavar=choices(DecompressPolicy),
        case_sensitive=False,
        help="When the node takes a compressed file only uncompressed: decompress never, only "
        "lossless-compressed ones (lossy images fail instead of arriving as if original), or any.",
    ),
]

# Talking to nodes.
NodeArg = Annotated[
    str,
    typer.Argument(
        metavar="NODE", help="A node name from `pacsctl nodes list`, or AET@host:port.", show_default=False
    ),
]
Aet = Annotated[
    Optional[str],
    typer.Option("--aet", metavar="AET", help="Calling AE title (default: the archive's ae_title)."),
]
Timeout = Annotated[
    float,
    typer.Option(
        "--timeout", metavar="SECONDS", min=1.0, help="Seconds to wait for the peer to connect or answer."
    ),
]

# Work.
Jobs = Annotated[
    Optional[int],
    typer.Option("--jobs", "-j", metavar="N", min=1, help="Worker processes (default: one per core)."),
]
CopyJobs = Annotated[
    Optional[int],
    typer.Option(
        "--jobs",
        "-j",
        metavar="N",
        min=1,
        help="Parallel copies (default: 2 per core, at least 4; 10 uploads to s3://).",
    ),
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", "-n", metavar=NO_METAVAR, help="Show what would happen; write nothing.")
]
OnConflictOpt = Annotated[
    Optional[OnConflict],
    typer.Option(
        "--on-conflict",
        metavar=choices(OnConflict),
        case_sensitive=False,
        help="Same SOP Instance UID, different bytes: keep the archived copy (default) or replace it.",
    ),
]
Event = Annotated[
    Optional[AuditEvent],
    typer.Option(
        "--event",
        "-e",
        metavar="EVENT",
        case_sensitive=False,
        help=f"Only this event: {', '.join(AuditEvent)}.",
    ),
]
Setting = Annotated[
    SettingKey,
    typer.Argument(
        metavar="KEY", case_sensitive=False, help=f"One of: {', '.join(SettingKey)}.", show_default=False
    ),
]
PathsArg = Annotated[
    list[Path],
    typer.Argument(
        metavar="PATH", help="Folders (recursive), files, zip files or DICOMDIR files.", show_default=False
    ),
]
DestArg = Annotated[
    str,
    typer.Argument(
        metavar="DEST",
        help="Backup folder (a mounted NAS, a USB disk; created if new) or s3://BUCKET/PREFIX.",
        show_default=False,
    ),
]
WaitForLock = Annotated[
    bool,
    typer.Option(
        "--wait",
        metavar=NO_METAVAR,
        help="If another backup, restore or repair holds DEST, wait for it instead of exit 1 (cron).",
    ),
]
EndpointUrl = Annotated[
    Optional[str],
    typer.Option(
        "--endpoint-url",
        metavar="URL",
        help="S3 endpoint for s3:// URLs (Ceph, Swift, MinIO); default: AWS_ENDPOINT_URL, the AWS config.",
    ),
]
