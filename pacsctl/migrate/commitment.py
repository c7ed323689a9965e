"""`migrate --commit`: after the C-FIND proof, DEST is asked to commit the study's instances
(Storage Commitment Push Model, `net.commitment`) and the run waits for its N-EVENT-REPORT.
A study is done only once DEST committed every SOP Instance UID the source listed."""

from __future__ import annotations

from pydicom.uid import generate_uid

from pacsctl.migrate.listing import StudyContents
from pacsctl.migrate.retry import Kind
from pacsctl.net.commitment import CommitmentListener
from pacsctl.net.types import NodeLike


def commit_study(
    listener: CommitmentListener,
    dest: NodeLike,
    expected: StudyContents,
    calling_aet: str,
    wait: float = 60.0,
    timeout: float = 30.0,
) -> tuple[str, Kind] | None:
    """Have `dest` commit the study; None when it committed all of it, else why not and
    whether that may change on a retry. Raises NetworkError (the N-ACTION refused or lost)."""
    unknown = [uid for uid in expected.instances if uid not in expected.classes]
    if unknown:
        return (
            f"the source gave no SOP Class UID for {len(unknown)} instances: cannot ask for commitment",
            Kind.PERMANENT,
        )
    transaction = generate_uid()
    listener.request(dest, expected.classes, transaction, calling_aet, timeout)
    report = listener.wait(transaction, wait)
    if report is None:
        return f"{dest.aet} sent no Storage Commitment report within {wait:g} s", Kind.TRANSIENT
    missing = [uid for uid in expected.instances if uid not in report.committed]
    if missing:
        reasons = ", ".join(sorted({f"0x{report.failed.get(uid, 0):04X}" for uid in missing}))
        return (
            f"{dest.aet} did not commit {len(missing)} of {len(expected.instances)} instances ({reasons})",
            Kind.TRANSIENT,
        )
    return None
