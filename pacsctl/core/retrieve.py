"""Query/Retrieve as an SCU, for `pacsctl query`, `move` and `get`.

- Identifiers are built from the same `-k KEY=VALUE` filters as `pacsctl ls`; answers are
  decoded with each data set's own character set (with the fallbacks of `core.identifiers`,
  since peers omit or mislabel it) into records shaped like `ls` records.
- A retrieve selected by anything but unique keys is first resolved with a C-FIND into one
  C-MOVE/C-GET per match: many SCPs (Orthanc among them) retrieve by unique keys only.
- What arrives in our own archive is counted and checked on disk; a peer's final status alone
  is never trusted (some answer Success before the images went out, DESIGN.md).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Set
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pynetdicom.presentation import PresentationContext

from pacsctl.core.archive import Archive
from pacsctl.core.identifiers import parse_identifier
from pacsctl.core.matching import LEVEL_KEYS, LEVELS, UNIQUE_KEY, RecordFilter, compile_filters
from pacsctl.errors import NetworkError, UsageError
from pacsctl.net import scu, sending
from pacsctl.net.scp import RunningScp, start_scp
from pacsctl.net.types import (
    STATUS_CANCEL,
    STATUS_MOVE_DESTINATION_UNKNOWN,
    STATUS_SUCCESS,
    AssocInfo,
    NodeLike,
    QueryModel,
    RetrieveCounts,
    ScpHandlers,
    ScpOptions,
    StoreRequest,
)

LOG = logging.getLogger(__name__)

UTF8 = "ISO_IR 192"
# The archive's answer to an instance whose UID it holds with other bytes: the archived copy
# stays, the received one goes to quarantine (`core.server.STATUS_CONFLICT_KEPT`). The instance
# is in the archive, so for a retrieve it arrived; it is reported, not failed.
_CONFLICT_KEPT = 0xB000
_INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "SV", "UV"})
_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})  # a backslash is text, not a separator
_LIST_KEYS = frozenset({"ModalitiesInStudy"})  # lists in `ls` records too
# Patient keys Study Root allows at STUDY level; `ls` study rows show them.
_STUDY_PATIENT_KEYS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")


# ------------------------------------------------------------------------------------------
# Identifiers
# ------------------------------------------------------------------------------------------


def query_model(level: str) -> QueryModel:
    """Patient Root for PATIENT level (Study Root has none), Study Root otherwise."""
    return "P" if level == "PATIENT" else "S"


def return_keys(level: str) -> tuple[str, ...]:
    """The keys a query at `level` asks for: the level's keys and the unique keys above it."""
    keys: list[str] = []
    if level == "STUDY":
        keys += _STUDY_PATIENT_KEYS
    elif level != "PATIENT":
        keys += [UNIQUE_KEY[lv] for lv in LEVELS[1:LEVELS.index(level)]]
        keys.insert(0, "PatientID")
    keys += LEVEL_KEYS[level]
    return tuple(dict.fromkeys(keys))


def build_identifier(level: str, filters: Mapping[str, str], keys: tuple[str, ...] = ()) -> Dataset:
    """A C-FIND/MOVE/GET identifier: QueryRetrieveLevel, each of `keys` empty (a return key),
    each filter with its value. Non-ASCII values make it declare UTF-8.

    Raises UsageError for a value the attribute's VR cannot hold."""
    ds = Dataset()
    if any(not v.isascii() for v in filters.values()):
        ds.SpecificCharacterSet = UTF8
    ds.QueryRetrieveLevel = level
    for keyword in dict.fromkeys([*keys, *filters]):
        vr = str(dictionary_VR(keyword)).split(" or ")[0]
        value: Any = filters.get(keyword, "")
        if value and vr not in _TEXT_VRS and "\\" in value:
            value = value.split("\\")
        if value and vr in ("US", "UL", "SS", "SL", "SV", "UV"):
            try:
                value = [int(v) for v in value] if isinstance(value, list) else int(value)
            except ValueError:
                raise UsageError(f"{keyword} needs a number, got {filters[keyword]!r}") from None
        elif value == "" and vr in ("US", "UL", "SS", "SL", "FL", "FD", "SV", "UV"):
            value = None
        ds.add_new(tag_for_keyword(keyword), vr, value)
    return ds


def response_record(ds: Dataset, level: str, keys: tuple[str, ...] = ()) -> dict[str, Any]:
    """A C-FIND answer as an `ls`-shaped record: each of `keys` ("" when absent), text
    decoded with the answer's character set, integers as int, ModalitiesInStudy as a list."""
    if "QueryRetrieveLevel" not in ds:
        ds.QueryRetrieveLevel = level  # parse_identifier wants it; some peers leave it out
    decoded = parse_identifier(ds)
    # Only what was asked for: extras some peers add (RetrieveAETitle) would make records
    # differ from `ls` records.
    wanted = keys or decoded.return_keys
    return {keyword: _typed(keyword, decoded.criteria.get(keyword, "")) for keyword in wanted}


def _typed(keyword: str, text: str) -> Any:
    if keyword in _LIST_KEYS:
        return [v for v in text.split("\\") if v] if text else []
    vr = str(dictionary_VR(keyword)).split(" or ")[0]
    if text and vr in _INT_VRS and "\\" not in text:
        try:
            return int(text)
        except ValueError:
            return text
    return text


# ------------------------------------------------------------------------------------------
# C-FIND
# ------------------------------------------------------------------------------------------


def query(
    node: NodeLike,
    level: str,
    filters: Mapping[str, str],
    calling_aet: str,
    timeout: float = 30.0,
) -> Iterator[dict[str, Any]]:
    """C-FIND `node` at `level` with `ls` filters; yield one `ls`-shaped record per match."""
    flt = compile_filters(filters)  # the same syntax checks as `ls`, before anything goes out
    keys = return_keys(level)
    identifier = build_identifier(level, filters, keys)
    for ds in scu.find(node, identifier, query_model(level), calling_aet=calling_aet,
                       timeout=timeout):
        record = response_record(ds, level, keys)
        if agrees(flt, record):
            yield record


def agrees(flt: RecordFilter, record: Mapping[str, Any]) -> bool:
    """False when an answered value contradicts a filter.

    Strictly hierarchical SCPs ignore keys of other levels (dcmqrscp answers every instance
    to an IMAGE-level PatientID filter), so answers are checked with `ls` matching too. A key
    the peer left empty cannot be judged and passes: peers leave out what they do not index.
    """
    for keyword, criterion in flt.criteria.items():
        value = record.get(keyword)
        if criterion.kind != "value" or value in (None, "", []):
            continue
        if not criterion.matches_value(value):
            return False
    return True


# ------------------------------------------------------------------------------------------
# Resolving a selection into retrieve identifiers
# ------------------------------------------------------------------------------------------


def _path_keys(level: str) -> list[str]:
    """Unique keys a retrieve at `level` must carry (Study Root; Patient Root at PATIENT)."""
    if level == "PATIENT":
        return ["PatientID"]
    return [UNIQUE_KEY[lv] for lv in LEVELS[1:LEVELS.index(level) + 1]]


def retrieve_identifiers(
    node: NodeLike,
    level: str,
    filters: Mapping[str, str],
    calling_aet: str,
    timeout: float = 30.0,
) -> list[Dataset]:
    """One unique-key identifier per entity to retrieve.

    Filters on exactly the unique keys of the path are used as they are (a UID list split
    into one identifier per UID); anything else is resolved with a C-FIND first."""
    flt = compile_filters(filters)  # syntax errors before anything goes out
    path = _path_keys(level)
    own = UNIQUE_KEY[level]
    direct = (
        set(filters) == set(path)
        and all(filters[k] and not any(c in filters[k] for c in "*?\\") for k in path if k != own)
        and filters[own] and not any(c in filters[own] for c in "*?")
    )
    if direct:
        parents = {k: filters[k] for k in path if k != own}
        return [_unique_identifier(level, {**parents, own: v})
                for v in dict.fromkeys(filters[own].split("\\")) if v]
    keys = tuple(dict.fromkeys([*path, *filters]))
    found = scu.find(node, build_identifier(level, filters, keys), query_model(level),
                     calling_aet=calling_aet, timeout=timeout)
    targets: dict[tuple[str, ...], Dataset] = {}
    for ds in found:
        record = response_record(ds, level, keys)
        if not agrees(flt, record):
            continue
        values = tuple(str(record.get(k, "") or "").strip() for k in path)
        if all(values) and values not in targets:
            targets[values] = _unique_identifier(level, dict(zip(path, values)))
    return list(targets.values())


def _unique_identifier(level: str, keys: Mapping[str, str]) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def expected_instances(
    node: NodeLike, identifier: Dataset, calling_aet: str, timeout: float = 30.0
) -> dict[str, str]:
    """SOP Instance UID -> SOP Class UID of every instance under one retrieve identifier,
    found level by level with C-FIND (hierarchical, so strict SCPs answer too)."""
    level = str(identifier.QueryRetrieveLevel)
    keys = {k: str(identifier.get(k)) for k in _path_keys(level)}
    below = level if level == "IMAGE" else LEVELS[LEVELS.index(level) + 1]
    wanted = ("SOPInstanceUID", "SOPClassUID") if below == "IMAGE" else (UNIQUE_KEY[below],)
    request = build_identifier(below, {k: v for k, v in keys.items() if k != UNIQUE_KEY[below]}
                               if level != "IMAGE" else keys, wanted)
    found: dict[str, str] = {}
    for ds in scu.find(node, request, query_model(level), calling_aet=calling_aet, timeout=timeout):
        value = str(ds.get(UNIQUE_KEY[below], "") or "").strip()
        if not value:
            continue
        if below == "IMAGE":
            found[value] = str(ds.get("SOPClassUID", "") or "").strip()
        else:
            # Patient Root's PatientID does not belong in the Study Root finds further down.
            parents = {} if level == "PATIENT" else keys
            child = _unique_identifier(below, {**parents, UNIQUE_KEY[below]: value})
            found.update(expected_instances(node, child, calling_aet, timeout))
    return found


# Syntaxes a C-GET offers each SOP class one context apiece (after uncompressed), so the peer
# sends an instance as it holds it instead of failing to transcode (Orthanc cannot decode
# JPEG 2000 or JPEG-LS, for one). Most common first: the list is cut when classes are many.
GET_SYNTAXES = (
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.5",     # RLE
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.1.99",  # Deflated explicit VR little endian
    "1.2.840.10008.1.2.2",     # Explicit VR big endian (retired, still met)
)


def get_contexts(sop_classes: Iterable[str]) -> list[PresentationContext] | None:
    """Storage contexts for a C-GET of instances of `sop_classes`: per class one uncompressed
    context and one per compressed syntax, as many as fit in 127. None when the classes are
    unknown or too many (the net layer's default set is used then)."""
    listed = set(sop_classes)
    classes = sorted(listed - {""})
    if not classes or "" in listed or len(classes) * 2 > sending.MAX_REQUESTED_CONTEXTS - 1:
        return None  # an instance of an unknown class must not go without a context
    per_class = (sending.MAX_REQUESTED_CONTEXTS - 1) // len(classes) - 1
    pairs = [(c, ts) for c in classes for ts in GET_SYNTAXES[:per_class]]
    return sending.contexts_for(pairs)


# ------------------------------------------------------------------------------------------
# C-MOVE and C-GET
# ------------------------------------------------------------------------------------------


@dataclass
class RetrieveSummary:
    """What a move or get did. Peer figures are summed over the sub-retrieves; `received`,
    `stored`, `duplicates` and `missing` are what we saw arrive in our own archive (None when
    the destination is another node, so nothing can be counted here)."""

    matched: int = 0  # entities retrieved (e.g. studies), after resolving the filters
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int = 0
    status: int | None = None  # the worst final status (Success only if every one was)
    failed_uids: list[str] = field(default_factory=list)
    expected: int | None = None  # instances the peer lists for the selection (C-FIND)
    received: int | None = None
    stored: int | None = None  # received and now in the archive (new)
    duplicates: int | None = None  # received, already in the archive
    conflicts: int | None = None  # received, other bytes than the archived copy (quarantined)
    store_failed: int | None = None  # received but refused or quarantined by our archive
    missing: list[str] = field(default_factory=list)  # expected but not in the archive
    elapsed: float = 0.0

    def add(self, counts: RetrieveCounts) -> None:
        """Fold one sub-retrieve's final counts in."""
        self.completed += counts.completed
        self.failed += counts.failed
        self.warning += counts.warning
        self.remaining += counts.remaining
        self.failed_uids += counts.failed_uids
        if self.status is None or _severity(counts.status) > _severity(self.status):
            self.status = counts.status

    @property
    def counted_locally(self) -> bool:
        return self.received is not None

    @property
    def ok(self) -> bool:
        """Everything the peer reported went well and, when we could count, all of it arrived
        and was stored."""
        # A Warning final status with no failed sub-operation means delivered with warnings
        # (our own archive answers one for a conflicting copy): not a failure by itself.
        warned = self.status is not None and 0xB000 <= self.status <= 0xB0FF
        if self.failed or self.remaining or not (self.status in (None, STATUS_SUCCESS) or warned):
            return False
        if not self.counted_locally:
            return True
        arrived = (self.stored or 0) + (self.duplicates or 0) + (self.conflicts or 0)
        return (not self.store_failed and not self.missing
                and arrived == self.completed + self.warning
                and (self.expected is None or arrived >= self.expected))

    @property
    def refused(self) -> bool:
        """The peer answered a failure and nothing was sent (not a partial failure)."""
        failure = self.status is not None and self.status not in (
            STATUS_SUCCESS, STATUS_CANCEL) and not 0xB000 <= self.status <= 0xB0FF
        return failure and not (self.completed or self.warning or self.failed)

    @property
    def destination_unknown(self) -> bool:
        return self.status == STATUS_MOVE_DESTINATION_UNKNOWN

    def as_dict(self) -> dict[str, Any]:
        """JSON summary fields (local counts only when they were counted)."""
        out: dict[str, Any] = {
            "matched": self.matched, "completed": self.completed, "failed": self.failed,
            "warning": self.warning, "remaining": self.remaining,
            "status": None if self.status is None else f"0x{self.status:04X}",
        }
        if self.counted_locally:
            out.update(received=self.received, stored=self.stored, duplicates=self.duplicates,
                       conflicts=self.conflicts, store_failed=self.store_failed,
                       missing=len(self.missing))
            if self.expected is not None:
                out["expected"] = self.expected
        if self.failed_uids:
            out["failed_uids"] = self.failed_uids
        out["elapsed"] = round(self.elapsed, 3)
        return out


def _severity(status: int | None) -> int:
    """0 Success, 1 Warning, 2 Cancel or Failure: the summary keeps the worst final status."""
    if status == STATUS_SUCCESS:
        return 0
    return 1 if status is not None and 0xB000 <= status <= 0xB0FF else 2


StoreCallback = Callable[[StoreRequest], int]


class ArchiveReceiver:
    """Stores instances handed over by a C-GET or an incoming C-STORE into the archive and
    counts them: received, new, already there, refused. Thread-safe (SCP threads call it)."""

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._lock = threading.Lock()
        self.received: set[str] = set()
        self.stored = 0
        self.duplicates = 0
        self.conflicts = 0
        self.store_failed = 0
        self._store, self._close = _archive_store_handler(archive)
        # C-GET: the net layer describes the association from the acceptor's side, which is
        # the peer; the archive must record the peer as the sender, not us.
        self.source: AssocInfo | None = None

    def has(self, sop_instance_uid: str) -> bool:
        """True when the archive holds this instance (files are the source of truth)."""
        return self.archive.path_of(Archive.object_relpath(sop_instance_uid)).is_file()

    def __call__(self, req: StoreRequest) -> int:
        uid = req.sop_instance_uid
        if self.source is not None:
            req = dataclasses.replace(req, assoc=self.source)
        existed = self.has(uid)
        status = self._store(req)
        with self._lock:
            self.received.add(uid)
            if status == _CONFLICT_KEPT:
                self.conflicts += 1
                LOG.warning("instance %s differs from the archived copy: kept that one, the "
                            "received one is in quarantine", uid)
            elif status != STATUS_SUCCESS:
                self.store_failed += 1
                LOG.warning("instance %s not stored (status 0x%04X)", uid, status)
            elif existed:
                self.duplicates += 1
            else:
                self.stored += 1
        return status

    def close(self) -> None:
        """Finish pending writes; safe to call twice."""
        close, self._close = self._close, lambda: None
        close()


def _archive_store_handler(archive: Archive) -> tuple[StoreCallback, Callable[[], None]]:
    """The serving node's C-STORE handler over `archive`: durable and indexed before it
    answers, concurrent associations group-committed, conflicts and garbage quarantined."""
    from pacsctl.core.server import ArchiveService  # imported late: it pulls in the SCP side

    service = ArchiveService(archive)
    return service.store, service.close


def move(
    node: NodeLike,
    destination_aet: str,
    level: str,
    filters: Mapping[str, str],
    calling_aet: str,
    receiver: ArchiveReceiver | None = None,
    on_progress: Callable[[RetrieveSummary], None] | None = None,
    settle: float = 10.0,
    timeout: float = 30.0,
    listening: bool = True,
) -> RetrieveSummary:
    """C-MOVE the selection from `node` to `destination_aet`.

    With a `receiver` (the destination is our own archive), the instances the peer lists for
    the selection are checked in the archive afterwards; once the peer's final answer is in,
    arrivals are awaited up to `settle` seconds of silence, since some peers answer Success
    before their last C-STORE arrived. `listening` False: another process (a running
    `pacsctl serve`) receives for us, so arrivals are counted from the archive alone."""
    start = time.perf_counter()
    summary = RetrieveSummary()
    targets = retrieve_identifiers(node, level, filters, calling_aet, timeout)
    summary.matched = len(targets)
    expected: set[str] | None = None
    before: set[str] = set()
    if receiver is not None:
        expected = set()
        for ident in targets:
            expected |= set(expected_instances(node, ident, calling_aet, timeout))
        summary.expected = len(expected)
        before = {uid for uid in expected if receiver.has(uid)}
    for ident in targets:
        counts = scu.move(node, destination_aet, ident, query_model(level),
                          calling_aet=calling_aet, timeout=timeout)
        summary.add(counts)
        if on_progress:
            on_progress(summary)
        if counts.status == STATUS_MOVE_DESTINATION_UNKNOWN:
            break  # the same answer for every other target
    if receiver is not None and expected is not None:
        _await_arrivals(receiver, expected, settle)
        _fill_local_counts(summary, receiver, expected, before, from_archive=not listening)
    summary.elapsed = time.perf_counter() - start
    return summary


def _await_arrivals(receiver: ArchiveReceiver, expected: set[str], settle: float) -> None:
    """Wait until every expected instance is in the archive, or nothing new came for
    `settle` seconds."""
    last_seen, last_change = -1, time.monotonic()
    while True:
        present = sum(1 for uid in expected if receiver.has(uid))
        if present >= len(expected):
            return
        now = time.monotonic()
        if present != last_seen:
            last_seen, last_change = present, now
        elif now - last_change >= settle:
            return
        time.sleep(0.2)


def _fill_local_counts(summary: RetrieveSummary, receiver: ArchiveReceiver,
                       expected: set[str] | None, before: Set[str] = frozenset(),
                       from_archive: bool = False) -> None:
    """Local counts from the receiver; or, `from_archive` (another process received), from
    which of the `expected` instances are now in the archive."""
    wanted = expected | receiver.received if expected is not None else receiver.received
    summary.missing = sorted(uid for uid in wanted if not receiver.has(uid))
    if from_archive and expected is not None:
        present = expected.difference(summary.missing)
        summary.received = len(present)
        summary.stored = len(present - before)
        summary.duplicates = len(present & before)
        summary.conflicts = summary.store_failed = 0
        return
    summary.received = len(receiver.received)
    summary.stored = receiver.stored
    summary.duplicates = receiver.duplicates
    summary.conflicts = receiver.conflicts
    summary.store_failed = receiver.store_failed


def get(
    node: NodeLike,
    receiver: ArchiveReceiver,
    level: str,
    filters: Mapping[str, str],
    calling_aet: str,
    on_progress: Callable[[RetrieveSummary], None] | None = None,
    timeout: float = 30.0,
) -> RetrieveSummary:
    """C-GET the selection from `node` straight into the receiver's archive and count what
    arrived and was stored, next to the peer's own counts.

    Each target's instances are listed first (C-FIND): their SOP classes decide the storage
    contexts offered, and every listed instance must be in the archive afterwards. A peer
    that cannot list them is still retrieved from, with the default contexts."""
    start = time.perf_counter()
    summary = RetrieveSummary()
    targets = retrieve_identifiers(node, level, filters, calling_aet, timeout)
    summary.matched = len(targets)
    receiver.source = AssocInfo(calling_aet=node.aet, called_aet=calling_aet,
                                peer_host=node.host, peer_port=int(node.port))
    expected: set[str] | None = set()
    for ident in targets:
        try:
            listed = expected_instances(node, ident, calling_aet, timeout)
        except NetworkError as exc:  # no IMAGE-level C-FIND there: count what the peer says
            LOG.warning("cannot list the instances to get (%s); relying on the peer's counts", exc)
            listed = {}
            expected = None
        if expected is not None:
            expected |= set(listed)
        counts = scu.get(node, ident, receiver, query_model(level), calling_aet=calling_aet,
                         timeout=timeout, storage_contexts=get_contexts(listed.values()))
        summary.add(counts)
        if on_progress:
            on_progress(summary)
    receiver.close()
    summary.expected = None if expected is None else len(expected)
    _fill_local_counts(summary, receiver, expected)
    summary.elapsed = time.perf_counter() - start
    return summary


@contextmanager
def receiving(archive: Archive, ae_title: str, source_aet: str) -> Iterator[tuple[ArchiveReceiver, bool]]:
    """A temporary storage listener on the archive's configured host and port, as `ae_title`,
    storing into `archive` (for C-MOVEs to our own AE title). Yields (receiver, listening);
    when the port is taken, presumably by a running `pacsctl serve` on this archive, nothing
    listens here and arrivals are counted from the archive afterwards.

    Only `source_aet` (the node moving to us) and the archive's allow-list may store: the
    listener is open on the configured host while the move runs, and nobody else should be
    able to slip instances into the archive through it."""
    receiver = ArchiveReceiver(archive)
    cfg = archive.config
    allow = list(dict.fromkeys([source_aet, *cfg.allow]))
    options = ScpOptions(ae_title=ae_title, host=cfg.host, port=cfg.port, allow=allow,
                         max_associations=cfg.max_associations, temp_dir=archive.tmp_dir)
    try:
        listener: RunningScp | None = start_scp(ScpHandlers(store=receiver), options)
    except NetworkError as exc:
        LOG.info("not listening on port %s (%s): counting arrivals from the archive", cfg.port, exc)
        listener = None
    try:
        yield receiver, listener is not None
    finally:
        if listener is not None:
            listener.stop(graceful=True, timeout=60.0)
        receiver.close()
