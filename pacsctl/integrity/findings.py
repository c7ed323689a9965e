"""What `verify`, `backup` and `reindex` report: one finding per problem, with stable names.

Scripts match on `problem` (a fixed vocabulary, below) and `where` ("archive" or "backup");
`detail` is for people. A finding never carries patient data: paths and UIDs only.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Problem(StrEnum):
    """The fixed vocabulary of `problem` in findings (scripts match on these values)."""

    # Problems with a file that should be there.
    MISSING = "missing"  # the index (or manifest) lists it, the file is gone
    WRONG_SIZE = "wrong_size"  # truncated or grown
    HASH_MISMATCH = "hash_mismatch"  # same size, other bytes (bit rot, overwritten)
    UNREADABLE = "unreadable"  # the OS refused to read it, or its DICOM header is broken
    UID_MISMATCH = "uid_mismatch"  # a readable instance, but not the one the index says
    # Problems of the folder as a whole.
    UNKNOWN_FILE = "unknown_file"  # a file under objects/ nobody recorded
    LEFTOVER_TEMP = "leftover_temp"  # a temp file of an interrupted write (never acknowledged)
    MANIFEST_DAMAGED = "manifest_damaged"
    INDEX_DAMAGED = "index_damaged"  # an index shard or series manifest cannot be read
    # A backup compared with its archive.
    NOT_BACKED_UP = "not_backed_up"  # in the archive, not in the backup
    DIFFERS_FROM_ARCHIVE = "differs_from_archive"  # the backup holds other bytes than the archive
    NOT_IN_ARCHIVE = "not_in_archive"  # backed up, but the archive has lost it
    # A backup copy that could not be made.
    COPY_FAILED = "copy_failed"


# The names the integrity modules use.
MISSING, WRONG_SIZE, HASH_MISMATCH = Problem.MISSING, Problem.WRONG_SIZE, Problem.HASH_MISMATCH
UNREADABLE, UID_MISMATCH = Problem.UNREADABLE, Problem.UID_MISMATCH
UNKNOWN_FILE, LEFTOVER_TEMP, MANIFEST_DAMAGED = (
    Problem.UNKNOWN_FILE,
    Problem.LEFTOVER_TEMP,
    Problem.MANIFEST_DAMAGED,
)
INDEX_DAMAGED = Problem.INDEX_DAMAGED
NOT_BACKED_UP, DIFFERS_FROM_ARCHIVE = Problem.NOT_BACKED_UP, Problem.DIFFERS_FROM_ARCHIVE
NOT_IN_ARCHIVE, COPY_FAILED = Problem.NOT_IN_ARCHIVE, Problem.COPY_FAILED

# Problems that mean the file's bytes are not the recorded ones: a good backup copy repairs them.
DAMAGE = frozenset({MISSING, WRONG_SIZE, HASH_MISMATCH, UNREADABLE, UID_MISMATCH})

ARCHIVE, BACKUP = "archive", "backup"

# Actions taken.
REMOVED = "removed"
RESTORED = "restored from backup"
RECOPIED = "copied again from the archive"  # a damaged backup copy replaced (`verify --backup --repair`)
REPAIRED = frozenset({RESTORED, RECOPIED})
ADOPTED = "moved to where it belongs"  # a misplaced instance in objects/, indexed at its path (reindex)
QUARANTINED = "moved to quarantine"  # junk or a stray copy in objects/ (reindex): kept, out of the way
LEFT_READ_ONLY = "left: read-only"  # a leftover on a read-only archive: harmless, not removable


@dataclass(slots=True)
class Finding:
    """One problem with one file (or with a manifest), and what was done about it."""

    path: str
    problem: Problem
    detail: str = ""
    sop_instance_uid: str = ""
    where: str = ARCHIVE
    action: str = ""

    @property
    def resolved(self) -> bool:
        """Whether nothing is left to do: a leftover cleaned up or a file restored."""
        return self.action in (REMOVED, LEFT_READ_ONLY, ADOPTED) or self.action in REPAIRED

    def as_dict(self) -> dict:
        """The JSON record (DICOM keyword for the UID, like every pacsctl record)."""
        return {
            "type": "problem",
            "path": self.path,
            "SOPInstanceUID": self.sop_instance_uid,
            "problem": self.problem,
            "where": self.where,
            "detail": self.detail,
            "action": self.action,
        }
