"""`pacsctl verify`: prove the archive and its backups are intact, and repair from a backup."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Optional

import typer

from pacsctl.archive.audit import AuditEvent, record_action
from pacsctl.cli import output
from pacsctl.cli.options import NO_METAVAR, EndpointUrl, Jobs, JsonReport, WaitForLock
from pacsctl.errors import EXIT_INTEGRITY, PacsctlError, UsageError


def write_report(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """Write NDJSON records to `path` (replaced atomically, so a mail job never reads half)."""
    path = path.expanduser()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        # Private like the archive (it names files and UIDs), whatever the umask.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # an old temp file of the same name keeps its mode otherwise
        with open(fd, "w", encoding="utf-8") as fh:
            for record in records:
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PacsctlError(f"cannot write the report {path}: {exc.strerror or exc}") from None


def verify(
    ctx: typer.Context,
    quick: bool = typer.Option(
        False, "--quick", metavar=NO_METAVAR, help="Presence and sizes only: no hashing, no parsing."
    ),
    sample: Optional[float] = typer.Option(
        None,
        "--sample",
        min=0.0,
        max=1.0,
        metavar="FRACTION",
        help="Re-hash a random share (e.g. 0.05) and quick-check the rest.",
    ),
    backup: Optional[str] = typer.Option(
        None,
        "--backup",
        metavar="DEST",
        help="Check the backup in DEST (folder or s3://BUCKET/PREFIX) against its manifest and the archive.",
    ),
    repair_from: Optional[Path] = typer.Option(
        None,
        "--repair-from",
        metavar="DEST",
        help="Restore damaged or missing files from the backup in DEST (byte-identical copies only).",
    ),
    repair: bool = typer.Option(
        False,
        "--repair",
        metavar=NO_METAVAR,
        help="With --backup: copy damaged backup copies again from the archive.",
    ),
    as_json: JsonReport = False,
    report: Optional[Path] = typer.Option(
        None, "--report", metavar="FILE", help="Also write the NDJSON report to FILE (for cron mail)."
    ),
    jobs: Jobs = None,
    endpoint_url: EndpointUrl = None,
    wait: WaitForLock = False,
) -> None:
    """Check that nothing is lost or damaged; exit 0 when clean, 3 when anything is wrong.

    By default every file is re-hashed against the SHA-256 recorded at ingest, its DICOM header
    parsed, and the index compared with the files: missing, unknown, wrong size, hash mismatch,
    unreadable. Temp files of interrupted writes are removed (never acknowledged) and reported.

    A bucket (s3://) is checked by its listing (missing, wrong size, unknown objects), then every
    object (or a --sample) downloaded and re-hashed against the manifest, never by ETag.

    Examples: pacsctl verify --json --report /var/log/pacs-verify.ndjson;
    pacsctl verify --backup /mnt/nas/pacs [--repair]; pacsctl verify --repair-from /mnt/nas/pacs;
    pacsctl verify --backup s3://pacs-offsite/site-a --sample 0.05
    """
    from pacsctl.cli.app import state
    from pacsctl.integrity import verify as verifier

    if quick and sample is not None:
        raise UsageError(
            "--quick and --sample exclude each other", hint="--sample re-hashes a share, --quick none"
        )
    if backup is not None and repair_from is not None:
        raise UsageError(
            "--backup and --repair-from exclude each other",
            hint="check the backup first, then repair from it",
        )
    if repair and backup is None:
        raise UsageError(
            "--repair goes with --backup DEST", hint="to repair the archive from a backup: --repair-from DEST"
        )
    if wait and backup is None:
        raise UsageError("--wait goes with --backup DEST", hint="it waits for a backup of DEST to finish")
    if sample == 0:
        raise UsageError("--sample must be more than 0")
    if report is not None and not report.expanduser().absolute().parent.is_dir():
        raise UsageError(f"cannot write the report: no folder {report.expanduser().absolute().parent}")
    mode = verifier.QUICK if quick else verifier.FULL
    opts = state(ctx)
    with output.LazyProgress("verify", opts.verbosity >= 0) as bar:
        if backup is not None:
            archive = _open_if_present(opts)
            try:
                result = _verify_backup(
                    backup,
                    endpoint_url,
                    archive,
                    mode=mode,
                    sample=sample,
                    jobs=jobs,
                    repair=repair,
                    wait=wait,
                    on_total=bar.start,
                    progress=bar.advance,
                )
            finally:
                if archive is not None:
                    archive.close()
        else:
            with opts.open_archive(create=False) as archive:
                result = verifier.verify_archive(
                    archive,
                    mode=mode,
                    sample=sample,
                    jobs=jobs,
                    repair_from=repair_from.expanduser() if repair_from else None,
                    on_total=bar.start,
                    progress=bar.advance,
                )
                _warn_if_empty(archive, result.summary.checked)
    records = list(verifier.records(result))
    if report is not None:
        write_report(report, records)
    s = result.summary
    output.print_report(records, as_json, _TITLES[s.status], _summary_text(s))
    if repair_from is not None:
        record_action(archive.root, AuditEvent.REPAIR, s.as_dict(), source=str(repair_from))
    elif backup is None:
        record_action(archive.root, AuditEvent.VERIFY, s.as_dict(), mode=str(mode), sample=sample)
    if not s.ok:
        raise typer.Exit(EXIT_INTEGRITY)


def _verify_backup(dest: str, endpoint_url: str | None, archive, **kwargs: Any):
    """Check a folder backup or a bucket backup (s3://), the same findings either way."""
    from pacsctl.storage.objects import is_object_url

    if not is_object_url(dest):
        if endpoint_url:
            raise UsageError("--endpoint-url goes with an s3:// backup")
        from pacsctl.integrity.verify import verify_backup

        return verify_backup(Path(dest).expanduser(), archive, **kwargs)
    from pacsctl.integrity.offsite import open_store
    from pacsctl.integrity.offsite_check import verify_bucket

    return verify_bucket(open_store(dest, endpoint_url, kwargs.get("jobs")), archive, **kwargs)


_TITLES = {
    "problems": "verify: problems found",
    "repaired": "verify: repaired",
    "cleaned": "verify: cleaned (no problems)",
    "ok": "verify",
}  # by VerifyStatus


def _summary_text(s) -> str:
    """The human summary line; says the same as the JSON summary's `status` and the exit code."""
    outcome = (
        f"{s.problems} problems" if s.problems else ("no problems left" if s.repaired else "no problems")
    )
    if s.repaired:
        source = "the archive" if s.target == "backup" else "the backup"
        outcome += f", {s.repaired} files repaired from {source} (exit 3: damage happened)"
    if s.cleaned:
        outcome += f", {s.cleaned} leftover temp files cleaned"
    if s.target == "backup" and s.problems and not s.repaired:
        outcome += " (`--repair` copies damaged copies again from the archive)"
    return (
        f"verify {s.target} ({s.mode}): {s.checked} files checked, {s.hashed} re-hashed "
        f"({s.bytes / 1e6:.0f} MB) in {s.elapsed:.1f} s; {outcome}"
    )


def _warn_if_empty(archive, expected: int) -> None:
    """An archive without a single instance file is worth a word even when nothing is wrong
    with it: a wrong path or an unmounted disk looks just like that."""
    from pacsctl.archive.archive import OBJECTS
    from pacsctl.integrity.filecheck import walk_objects

    if next(walk_objects(archive.root, OBJECTS), None) is None:
        output.warn(f"the archive at {archive.root} holds no instance files; the index expected {expected}")


def _open_if_present(opts):
    """The archive to compare a backup with, or None when there is none (backup checked alone)."""
    try:
        return opts.open_archive(create=False)
    except UsageError:
        output.warn("no archive to compare with: checking the backup against its manifest only")
        return None


def register(app: typer.Typer) -> None:
    """Add `verify` to the app."""
    app.command("verify")(verify)
