"""`pacsctl send` as a library: pick the files (paths or archive instances) and C-STORE them.

Inputs are walked with the importer's `find_sources` (folders recursive, symlink loops safe,
DICOMDIR media followed case-insensitively). Files that are plainly not DICOM (a viewer, an
autorun.inf, a DICOMDIR) are skipped, not failed: a CD folder must not end in "partial failure"
because of its viewer. Anything that looks like DICOM and does not arrive is a failure.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pacsctl.archive.archive import Archive
from pacsctl.archive.search import instances_matching
from pacsctl.errors import NetworkError, UsageError
from pacsctl.ingest.sources import ZIP_ERRORS, Problem, Source, find_sources
from pacsctl.net import scu, sending
from pacsctl.net.cancel import Cancellation
from pacsctl.net.types import NodeLike, StoreFailure, StoreResult

_DICM_OFFSET = 128


@dataclass
class SendItem:
    """One input of a send: a file to C-STORE, or why it is not sent (`skip`/`fail`)."""

    path: str
    size: int = 0
    skip: str | None = None  # not DICOM: left out, not a failure
    fail: str | None = None  # meant to be sent but cannot be read
    origin: str | None = None  # how reports name it when `path` is a copy (a zip member's)

    @property
    def name(self) -> str:
        """How reports name this input."""
        return self.origin or self.path


@dataclass
class SendOutcome:
    """One input's result, as reported per failed file."""

    path: str
    ok: bool
    skipped: bool = False
    size: int = 0
    sop_instance_uid: str | None = None
    status: int | None = None
    reason: str | None = None
    interrupted: bool = False  # not sent (or not answered) because a stop was requested
    unreached: bool = False  # never got to the peer whole: the association or the link had gone


@dataclass
class SendSummary:
    """Totals of a send: files = sent + failed + skipped + not_sent (a stop was requested)."""

    sent: int = 0
    failed: int = 0
    skipped: int = 0
    not_sent: int = 0  # left when a stop was requested (or in flight then, unanswered)
    interrupted: bool = False
    bytes: int = 0
    elapsed: float = 0.0
    failures: list[SendOutcome] = field(default_factory=list)

    @property
    def files(self) -> int:
        return self.sent + self.failed + self.skipped + self.not_sent

    def as_dict(self) -> dict[str, Any]:
        """The JSON summary's fields (`not_sent` and `interrupted` only after a stop)."""
        out: dict[str, Any] = {
            "files": self.files,
            "sent": self.sent,
            "failed": self.failed,
            "skipped": self.skipped,
        }
        if self.interrupted:
            out.update(not_sent=self.not_sent, interrupted=True)
        out.update(bytes=self.bytes, elapsed=round(self.elapsed, 3))
        return out


def collect_files(paths: Iterable[str | Path], spill_dir: str | Path | None = None) -> list[SendItem]:
    """Every input under `paths`: folders recursively, DICOMDIR media by their references,
    and, with a `spill_dir`, the members of zip files (copied there to be sent; see
    `spilled_inputs`; without one they are skipped).

    A file given by name that is not DICOM fails (the user asked for it); one met while
    walking a folder or a zip is skipped."""
    named = {str(Path(p)) for p in paths}
    items: list[SendItem] = []
    for found in find_sources([str(p) for p in paths]):
        if isinstance(found, Problem):
            items.append(SendItem(found.origin, fail=found.reason))
        elif found.member is not None:
            items.append(_zip_member(found, spill_dir, len(items)))
        else:
            items.append(_classify(found, explicit=found.path in named))
    return items


@contextmanager
def spilled_inputs() -> Iterator[Path]:
    """A private temporary folder for the zip members a send copies out (`import` reads zips
    in place; a C-STORE goes from a file); removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="pacsctl-send-"))  # 0700
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _zip_member(source: Source, spill_dir: str | Path | None, seq: int) -> SendItem:
    """A zip member copied into `spill_dir` (streamed: memory stays bounded) and classified
    like a file met in a folder; the copy is named by its position, reported by its origin."""
    if spill_dir is None:
        return SendItem(source.origin, skip="member of a zip file (import it, then send --study)")
    copy = Path(spill_dir) / f"{seq:08d}.dcm"
    try:
        with source.open() as stream, open(copy, "wb") as out:
            shutil.copyfileobj(stream, out, 1 << 20)
    except (OSError, *ZIP_ERRORS) as exc:
        copy.unlink(missing_ok=True)
        return SendItem(source.origin, fail=f"unreadable zip member: {exc}")
    item = _classify(Source(str(copy), size=source.size), explicit=False)
    item.origin = source.origin
    if item.skip or item.fail:
        copy.unlink(missing_ok=True)
    return item


def _classify(source: Source, explicit: bool) -> SendItem:
    path = Path(source.path)
    if path.name.upper() == "DICOMDIR" and not explicit:
        return SendItem(source.path, skip="DICOMDIR (a media index, not an instance)")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(_DICM_OFFSET + 4)
    except OSError as exc:
        return SendItem(source.path, fail=f"unreadable: {exc.strerror or exc}")
    if head[_DICM_OFFSET:] == b"DICM":
        return SendItem(source.path, size)
    # No preamble: a bare data set (old modalities write these) is still DICOM if it parses.
    try:
        sending.file_info(path)
    except Exception:
        reason = "not a DICOM file"
        return (
            SendItem(source.path, size, fail=reason) if explicit else SendItem(source.path, size, skip=reason)
        )
    return SendItem(source.path, size)


def archive_files(archive: Archive, filters: Mapping[str, str], everything: bool = False) -> list[SendItem]:
    """The archived instances under the studies/series/instances matching `filters`
    (`everything`: the whole archive, with no filter).

    Filters use `pacsctl ls` matching; the level searched is the deepest one a key belongs to
    (a SeriesDescription filter selects series, a StudyDate filter whole studies)."""
    if not filters and not everything:
        raise UsageError("nothing selected in the archive", hint="give --study UID or -k KEY=VALUE")
    instances = instances_matching(archive.index, filters)
    found = [
        SendItem(str(archive.path_of(r["path"])), int(r.get("size") or 0)) for r in instances if r.get("path")
    ]
    if not found:  # the values are not quoted: a -k filter may hold a patient's name
        what = f" ({', '.join(sorted(filters))})" if filters else ": the archive holds no instance"
        raise UsageError(
            f"no archived instance matches the selection{what}",
            hint="see `pacsctl ls` for what the archive holds; nothing was sent",
        )
    return found


# The UID a record of `ls --json` names, from the most specific level up.
_RECORD_UIDS = ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")


@dataclass
class StdinSelection:
    """What `send NODE -` read: plain paths, and UIDs of archived entities by their key."""

    paths: list[str] = field(default_factory=list)
    uids: dict[str, list[str]] = field(default_factory=dict)  # keyword -> UIDs, in order
    problems: list[SendItem] = field(default_factory=list)  # lines that name nothing sendable

    @property
    def needs_archive(self) -> bool:
        return bool(self.uids)


def read_selection(lines: Iterable[str]) -> StdinSelection:
    """Parse `send -` input: one path per line, or NDJSON records as `pacsctl ls --json`
    prints them (any level). A record is sent by the most specific UID it carries (an
    instance record by its SOPInstanceUID, from the archive), else by its `path`; summary
    records and empty lines are ignored."""
    selection = StdinSelection()
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if not line.startswith("{"):
            selection.paths.append(line)
            continue
        try:
            record = json.loads(line)
        except ValueError:
            selection.problems.append(SendItem(f"<stdin>:{number}", fail="not a JSON record"))
            continue
        if not isinstance(record, dict) or record.get("type") == "summary":
            continue
        keyword = next((k for k in _RECORD_UIDS if isinstance(record.get(k), str) and record[k]), None)
        if keyword is not None:
            selection.uids.setdefault(keyword, []).append(record[keyword])
        elif isinstance(record.get("path"), str) and record["path"]:
            selection.paths.append(record["path"])
        else:
            selection.problems.append(
                SendItem(f"<stdin>:{number}", fail="record names no path, SOPInstanceUID or study/series UID")
            )
    return selection


def selection_files(archive: Archive, selection: StdinSelection) -> list[SendItem]:
    """The archived instances the UIDs of a `send -` selection name (each once, in order);
    an instance UID the archive does not hold fails on its own."""
    items: list[SendItem] = []
    seen: set[str] = set()
    for keyword, uids in selection.uids.items():
        if keyword == "SOPInstanceUID":
            for uid in dict.fromkeys(uids):
                path = archive.path_of(Archive.object_relpath(uid))
                try:
                    size = path.stat().st_size
                except OSError:
                    items.append(SendItem(uid, fail="not in the archive"))
                    continue
                if str(path) not in seen:
                    seen.add(str(path))
                    items.append(SendItem(str(path), size))
            continue
        for item in archive_files(archive, {keyword: "\\".join(dict.fromkeys(uids))}):
            if item.path not in seen:
                seen.add(item.path)
                items.append(item)
    return items


def send(
    node: NodeLike,
    items: list[SendItem],
    calling_aet: str,
    on_outcome: Callable[[SendOutcome], None] | None = None,
    timeout: float = 30.0,
    associations: int = 1,
    cancel: Cancellation | None = None,
    decompress: sending.Decompress = sending.Decompress.LOSSLESS,
) -> SendSummary:
    """C-STORE the sendable `items` to `node` over up to `associations` associations at once;
    account for every item (`on_outcome` is called under a lock, one outcome at a time).

    Per-message overhead, not bytes, limits a Python sender, and peers answer each instance
    after their own write: several associations overlap those waits. Files are split into
    contiguous runs, so a series mostly travels on one association. A peer that refuses the
    extra associations gets their files over the ones it accepted. Raises NetworkError when
    no association can be opened at all (nothing was sent).

    Once `cancel` is requested no new file starts; what is in flight is answered or aborted
    within the grace period, and every file not sent counts as `not_sent`.

    A compressed file the peer takes only uncompressed is decompressed where `decompress`
    allows (default: lossless compression only), else it fails with the reason."""
    cancel = cancel or Cancellation()
    sender = _Sender(node, calling_aet, {i.path: i.size for i in items}, on_outcome, timeout, cancel)
    sender.decompress = decompress
    sender.names = {i.path: i.origin for i in items if i.origin}
    start = time.perf_counter()
    for item in items:
        if item.skip:
            sender.account(SendOutcome(item.name, False, skipped=True, size=item.size, reason=item.skip))
        elif item.fail:
            sender.account(SendOutcome(item.name, False, size=item.size, reason=item.fail))
    paths = [i.path for i in items if not (i.skip or i.fail)]
    runs = max(1, min(associations, len(paths) // 2))
    size = -(-len(paths) // runs) if paths else 0
    chunks = [paths[n * size : (n + 1) * size] for n in range(runs)] if paths else []
    errors: list[NetworkError] = []
    leftovers: list[str] = []

    def work(chunk: list[str]) -> None:
        try:
            sender.send(chunk)
        except NetworkError as exc:  # this association was refused; the others may be fine
            errors.append(exc)
            leftovers.extend(chunk)

    # Every run in a thread of its own; this thread only waits, so a signal handler that
    # requests the stop runs at once (the threads see it before their next file).
    threads = [
        threading.Thread(target=work, args=(c,), name=f"pacsctl-send-{n}") for n, c in enumerate(chunks)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        while thread.is_alive():
            thread.join(0.2)
    if chunks and len(errors) == len(chunks) and not cancel.requested:
        raise errors[0]  # not a single association: the node is unreachable (exit 4)
    if leftovers and not cancel.requested:
        try:
            sender.send(leftovers)
            leftovers = []
        except NetworkError as exc:
            errors.append(exc)
    for path in leftovers:  # refused associations' files that no other association took
        sender.not_sent(path, str(errors[-1]), interrupted=cancel.requested)
    sender.summary.interrupted = cancel.requested
    sender.summary.elapsed = time.perf_counter() - start
    return sender.summary


class _Sender:
    """Sends runs of files to one node and accounts for each, from several threads."""

    def __init__(
        self,
        node: NodeLike,
        calling_aet: str,
        sizes: dict[str, int],
        on_outcome: Callable[[SendOutcome], None] | None,
        timeout: float,
        cancel: Cancellation,
    ) -> None:
        self.node, self.calling_aet, self.sizes = node, calling_aet, sizes
        self.on_outcome, self.timeout, self.cancel = on_outcome, timeout, cancel
        self.summary = SendSummary()
        self.names: dict[str, str] = {}  # path sent -> how reports name it (zip members' copies)
        self.decompress = sending.Decompress.LOSSLESS
        self._lock = threading.Lock()

    def account(self, outcome: SendOutcome) -> None:
        """Count one outcome and report it (by the input's name, not its copy's path)."""
        outcome.path = self.names.get(outcome.path, outcome.path)
        with self._lock:
            if outcome.skipped:
                self.summary.skipped += 1
            elif outcome.ok:
                self.summary.sent += 1
                self.summary.bytes += outcome.size
            elif outcome.interrupted:
                self.summary.not_sent += 1
            else:
                self.summary.failed += 1
                self.summary.failures.append(outcome)
            if self.on_outcome:
                self.on_outcome(outcome)

    def not_sent(
        self, path: str, reason: str | None, uid: str | None = None, interrupted: bool = False
    ) -> None:
        """Account for a file that did not reach the peer."""
        size = self.sizes.get(path, 0)
        self.account(
            SendOutcome(
                path,
                False,
                size=size,
                sop_instance_uid=uid,
                reason=reason,
                interrupted=interrupted,
                unreached=True,
            )
        )

    def _result(self, res: StoreResult) -> None:
        self.account(
            SendOutcome(
                res.path,
                res.ok,
                size=self.sizes.get(res.path, 0),
                sop_instance_uid=res.sop_instance_uid,
                status=res.status,
                reason=None if res.ok else (res.error or _status_text(res.status)),
                interrupted=res.failure is StoreFailure.INTERRUPTED,
                unreached=res.failure is StoreFailure.NOT_SENT,
            )
        )

    def _store(self, paths: list[str], progress: Callable[[StoreResult], None]) -> None:
        scu.store(
            self.node,
            paths,
            calling_aet=self.calling_aet,
            progress=progress,
            timeout=self.timeout,
            cancel=self.cancel,
            decompress=self.decompress,
        )

    def send(self, paths: list[str]) -> None:
        """Send `paths` on one association at a time, accounting for each file.

        Raises NetworkError only when the first association cannot be opened (nothing of
        `paths` was sent or accounted then)."""
        lost: list[StoreResult] = []  # never tried: the association had gone
        unanswered: list[StoreResult] = []  # sent, no answer: the culprit, or a victim of its abort

        def on_result(res: StoreResult) -> None:
            if res.failure is StoreFailure.NOT_SENT:
                lost.append(res)
            elif res.failure is StoreFailure.NO_RESPONSE:
                unanswered.append(res)
            else:
                self._result(res)

        pending, first = paths, True
        while pending:
            lost.clear()
            try:
                self._store(pending, on_result)
            except NetworkError as exc:
                if first and not self.cancel.requested:
                    raise
                lost[:] = [
                    StoreResult(p, None, None, str(exc), failure=StoreFailure.NOT_SENT) for p in pending
                ]
                break
            first = False
            # A peer that chokes on one file drops the association: the files after it were
            # never tried, so they go again on a fresh association.
            if not lost or len(lost) == len(pending) or self.cancel.requested:
                break
            pending = [r.path for r in lost]
        for res in lost:
            self.not_sent(res.path, res.error, res.sop_instance_uid, self.cancel.requested)
        # A file sent while the peer was aborting goes unanswered through no fault of its own;
        # each unanswered file gets one more go, alone, so a real culprit cannot sink another.
        for res in unanswered:
            if self.cancel.requested:
                self.not_sent(res.path, res.error, res.sop_instance_uid, interrupted=True)
                continue
            try:
                self._store([res.path], self._result)
            except NetworkError as exc:
                self.not_sent(res.path, str(exc), res.sop_instance_uid)


def _status_text(status: int | None) -> str:
    if status is None:
        return "no response"
    return f"refused by the peer (status 0x{status:04X})"
