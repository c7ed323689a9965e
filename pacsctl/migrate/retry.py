"""Which failures of a study's transfer are worth another try, and when.

Decided from typed outcomes only (`NetworkFailure`, DICOM status codes and their categories,
`net.types`), never from message text: a refused, lost or timed-out association, out of
resources (0xA7xx, incl. 0xA702) and instances missing at DEST after a Success are transient;
an unknown destination (0xA801), other failures (0xCxxx, ...) and a TLS or name problem are
permanent, and fail the study at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from pacsctl.errors import NetworkFailure
from pacsctl.net.types import (
    STATUS_CANCEL,
    STATUS_MOVE_DESTINATION_UNKNOWN,
    STATUS_OUT_OF_RESOURCES,
    STATUS_SUCCESS,
    StatusCategory,
    status_category,
)

_OUT_OF_RESOURCES_CLASS = STATUS_OUT_OF_RESOURCES & 0xFF00  # 0xA7xx: refused, out of resources

_TRANSIENT_NETWORK = frozenset(
    {
        NetworkFailure.REFUSED,
        NetworkFailure.TIMEOUT,
        NetworkFailure.LOST,
        NetworkFailure.ABORTED,
        NetworkFailure.REJECTED,  # busy nodes reject associations; the attempt limit bounds it
        NetworkFailure.UNREACHABLE,
    }
)


class Kind(StrEnum):
    """Whether a failed attempt may succeed when tried again."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


def of_network(failure: NetworkFailure | None) -> Kind:
    """A network failure's kind (an unnamed one counts as transient: the limit bounds it)."""
    if failure is None or failure in _TRANSIENT_NETWORK:
        return Kind.TRANSIENT
    return Kind.PERMANENT


def of_status(status: int) -> Kind | None:
    """A C-MOVE/C-GET final status's kind; None for Success and Warning (the check decides)."""
    if status == STATUS_SUCCESS or status_category(status) is StatusCategory.WARNING:
        return None
    if status == STATUS_MOVE_DESTINATION_UNKNOWN:
        return Kind.PERMANENT
    if status & 0xFF00 == _OUT_OF_RESOURCES_CLASS or status == STATUS_CANCEL:
        return Kind.TRANSIENT
    return Kind.PERMANENT


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with a cap: `base`, 2x`base`, 4x`base` ... at most `cap` seconds,
    for at most `attempts` tries of one study per run."""

    attempts: int = 5
    base: float = 2.0
    cap: float = 60.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed try number `attempt` (1-based)."""
        return float(min(self.cap, self.base * 2 ** max(0, attempt - 1)))
