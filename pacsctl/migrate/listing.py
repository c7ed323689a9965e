"""What a node holds of one study, instance by instance (C-FIND, one association per study).

A relational IMAGE-level query with only the StudyInstanceUID answers in one round trip where
the node allows it (Orthanc does); a strictly hierarchical node (DCMTK dcmqrscp) answers that
with a failure or nothing, and is then asked level by level (SERIES, then IMAGE per series)
on the same association. Once a node has answered a relational query with instances, its
empty answers are taken as they are (`Relational`): a study it does not hold costs one query.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pynetdicom.association import Association
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind  # type: ignore[attr-defined]

from pacsctl.errors import NetworkError, NetworkFailure, OperationInterrupted
from pacsctl.net import scu
from pacsctl.net.cancel import Cancellation
from pacsctl.net.types import STATUS_CANCEL, STATUS_SUCCESS, NodeLike

_PENDING = (0xFF00, 0xFF01)


class Relational:
    """Which nodes have shown that they answer relational IMAGE-level queries (kept for one
    migration run: a node behind the same address may be another one later)."""

    def __init__(self) -> None:
        self._known: set[tuple[str, str, int]] = set()

    @staticmethod
    def _key(node: NodeLike) -> tuple[str, str, int]:
        return (node.aet, node.host, int(node.port))

    def proven(self, node: NodeLike) -> bool:
        return self._key(node) in self._known

    def prove(self, node: NodeLike) -> None:
        self._known.add(self._key(node))


@dataclass(frozen=True)
class StudyContents:
    """SOP Instance UID -> Series Instance UID of every instance a node answered for a study."""

    study_uid: str
    instances: dict[str, str]
    classes: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> SOP Class UID, where given

    def missing_from(self, other: StudyContents) -> dict[str, str]:
        """Our instances that `other` does not hold (UIDs compared, not counts)."""
        return {uid: series for uid, series in self.instances.items() if uid not in other.instances}

    def series(self) -> dict[str, int]:
        """Series Instance UID -> instance count."""
        out: dict[str, int] = {}
        for series in self.instances.values():
            out[series] = out.get(series, 0) + 1
        return out


FIND_CONTEXT = StudyRootQueryRetrieveInformationModelFind


def list_study(
    node: NodeLike,
    study_uid: str,
    calling_aet: str,
    timeout: float = 30.0,
    cancel: Cancellation | None = None,
) -> StudyContents:
    """Every instance `node` answers for `study_uid`, on an association of its own. Raises
    NetworkError (its `failure` typed)."""
    context = build_context(StudyRootQueryRetrieveInformationModelFind)
    with scu.associate(node, [context], calling_aet, timeout=timeout, cancel=cancel) as assoc:
        return list_study_on(assoc, node, study_uid, cancel)


def list_study_on(
    assoc: Association,
    node: NodeLike,
    study_uid: str,
    cancel: Cancellation | None = None,
    relational: Relational | None = None,
) -> StudyContents:
    """`list_study` over an association the caller holds (with the Study Root Find context);
    `relational` remembers the nodes whose empty relational answers can be believed."""
    contents = StudyContents(study_uid, {})
    answers = _find(assoc, node, _identifier("IMAGE", study_uid, "", ""), cancel)
    _add(contents, answers)
    if contents.instances:
        if relational is not None:
            relational.prove(node)
        return contents
    if answers is not None and relational is not None and relational.proven(node):
        return contents
    for ds in _find(assoc, node, _identifier("SERIES", study_uid, ""), cancel) or []:
        series_uid = str(ds.get("SeriesInstanceUID", "") or "").strip()
        if series_uid:
            _add(contents, _find(assoc, node, _identifier("IMAGE", study_uid, series_uid, ""), cancel))
    return contents


def _find(
    assoc: Association, node: NodeLike, identifier: Dataset, cancel: Cancellation | None
) -> list[Dataset] | None:
    """The answers of one C-FIND, or None when the node answered a failure status."""
    answers: list[Dataset] = []
    final: int | None = None
    for status, ds in assoc.send_c_find(identifier, FIND_CONTEXT):
        if cancel is not None and cancel.requested:
            raise OperationInterrupted("listing interrupted")
        code = getattr(status, "Status", None)
        if code in _PENDING:
            if ds is not None:
                answers.append(ds)
            continue
        final = code
    if final is None:
        raise NetworkError(
            f"C-FIND on {node.aet}: no final response (timeout or abort)", failure=NetworkFailure.LOST
        )
    return answers if final in (STATUS_SUCCESS, STATUS_CANCEL) else None


def _identifier(level: str, study_uid: str, series_uid: str, sop_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    if sop_uid is not None:
        ds.SOPInstanceUID = sop_uid
        ds.SOPClassUID = ""
    return ds


def _add(contents: StudyContents, answers: list[Dataset] | None) -> None:
    for ds in answers or []:
        uid = str(ds.get("SOPInstanceUID", "") or "").strip()
        series = str(ds.get("SeriesInstanceUID", "") or "").strip()
        if uid and series:  # a relational answer without its series cannot be moved by series
            contents.instances[uid] = series
            sop_class = str(ds.get("SOPClassUID", "") or "").strip()
            if sop_class:
                contents.classes[uid] = sop_class
