"""Exception tree; each class carries the process exit code the CLI returns for it.

Exit codes (stable, scripts rely on them):
0 ok, 1 error, 2 usage, 3 integrity problems or partial failure, 4 network, 130 interrupted.
"""

from __future__ import annotations

from enum import Enum

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


class InvalidQueryError(UsageError):
    """A query (filters, a C-FIND identifier) that DICOM matching cannot use: a usage error on the
    command line, a failure status for a network request (the SCP decides on this type)."""


class IntegrityError(PacsctlError):
    """The archive or a replica is damaged, or a batch partially failed."""

    exit_code = EXIT_INTEGRITY


class NetworkFailure(Enum):
    """What went wrong talking to a peer: decided from the socket and DICOM events, never from
    message text, so callers (and their hints) can act on it."""

    DNS = "dns"  # the host name does not resolve
    REFUSED = "refused"  # nothing listens on the port
    UNREACHABLE = "unreachable"  # no route to the host, network down
    TIMEOUT = "timeout"  # no connection, or no answer to the association request, in time
    TLS = "tls"  # the TLS handshake failed
    REJECTED = "rejected"  # A-ASSOCIATE-RJ, or no presentation context accepted
    ABORTED = "aborted"  # the peer aborted or closed the connection
    LOST = "lost"  # an established association broke, or a request went unanswered
    STATUS = "status"  # the peer answered a request with a failure status
    DESTINATION_UNKNOWN = "destination_unknown"  # C-MOVE 0xA801: the peer does not know the AE


class NetworkError(PacsctlError):
    """A peer was unreachable, rejected us, or timed out; `failure` says which."""

    exit_code = EXIT_NETWORK

    def __init__(self, message: str, hint: str | None = None, failure: NetworkFailure | None = None) -> None:
        super().__init__(message, hint)
        self.failure = failure


class OperationInterrupted(PacsctlError):
    """Stopped by Ctrl-C or SIGTERM after finishing or aborting what was in flight."""

    exit_code = EXIT_INTERRUPTED


class InvalidDicomError(PacsctlError):
    """Input that is not a readable DICOM instance (goes to quarantine)."""


class StorageFullError(PacsctlError):
    """The archive's file system has no room left (C-STORE answers 0xA700)."""
