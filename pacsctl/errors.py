"""Exception tree; each class carries the process exit code the CLI returns for it.

Exit codes (stable, scripts rely on them):
0 ok, 1 error, 2 usage, 3 integrity problems or partial failure, 4 network, 130 interrupted.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3
EXIT_NETWORK = 4
EXIT_INTERRUPTED = 130


class PacsctlError(Exception):
    """Base of every error pacsctl reports as one `error: ...` line."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


class UsageError(PacsctlError):
    """Bad arguments or configuration given by the user."""

    exit_code = EXIT_USAGE


class IntegrityError(PacsctlError):
    """The archive or a replica is damaged, or a batch partially failed."""

    exit_code = EXIT_INTEGRITY


class NetworkError(PacsctlError):
    """A peer was unreachable, rejected us, or timed out."""

    exit_code = EXIT_NETWORK


class InvalidDicomError(PacsctlError):
    """Input that is not a readable DICOM instance (goes to quarantine)."""


class StorageFullError(PacsctlError):
    """The archive's file system has no room left (C-STORE answers 0xA700)."""
