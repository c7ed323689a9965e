"""`pacsctl backup DEST`: an incremental, verifiable replica of the archive (a folder or a bucket)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from pacsctl.archive.audit import AuditEvent, record_action
from pacsctl.cli import output
from pacsctl.cli.options import NO_METAVAR, CopyJobs, DestArg, EndpointUrl, JsonReport, WaitForLock
from pacsctl.errors import EXIT_INTEGRITY, UsageError

if TYPE_CHECKING:
    from pacsctl.storage.locks import LockHolder


def backup(
    ctx: typer.Context,
    dest: DestArg,
    as_json: JsonReport = False,
    jobs: CopyJobs = None,
    endpoint_url: EndpointUrl = None,
    prune: bool = typer.Option(
        False,
        "--prune",
        metavar=NO_METAVAR,
        help="s3:// only: delete backed-up objects the archive no longer has (nothing else ever deletes).",
    ),
    wait: WaitForLock = False,
    break_lock: bool = typer.Option(
        False,
        "--break-lock",
        metavar=NO_METAVAR,
        help="s3:// only: take the prefix's lock although its holder looks alive (you know it is dead).",
    ),
) -> None:
    """Copy what is new or changed to DEST, with a manifest to verify and restore from.

    A consistent snapshot of what the archive held when the backup started, safe while `serve`
    writes. Each copy is checked against the SHA-256 recorded at ingest and written atomically
    and durably. DEST is a folder or s3://BUCKET/PREFIX (endpoint and credentials as for every
    AWS tool: AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION,
    AWS_PROFILE); each object keeps its SHA-256 in its metadata. Resumable: run it again.
    Exit 0 when every file is backed up, 3 when some could not be. One run per DEST at a time:
    while another backup (or verify --repair) holds it, exit 1 naming it, or --wait for it.

    Examples: pacsctl backup /mnt/nas/pacs; pacsctl backup s3://pacs-offsite/site-a --jobs 16;
    pacsctl verify --backup s3://pacs-offsite/site-a --sample 0.05

    Restore when the archive is lost: see `pacsctl restore --help`.
    """
    from pacsctl.cli.app import state
    from pacsctl.integrity.backup import backup as run_backup
    from pacsctl.storage.objects import is_object_url

    opts = state(ctx)
    to_bucket = is_object_url(dest)
    if not to_bucket and (prune or endpoint_url or break_lock):
        raise UsageError(
            "--prune, --endpoint-url and --break-lock go with an s3:// destination",
            hint="a folder backup keeps every file it ever copied",
        )
    with opts.open_archive(create=False) as archive:
        if to_bucket:
            from pacsctl.integrity.offsite import backup_to_bucket, open_store
            from pacsctl.storage.lease import Lease

            store = open_store(dest, endpoint_url, jobs)
            lease = Lease(
                store, "backup", wait=wait, break_lock=break_lock, on_wait=_waiting, on_takeover=_taking_over
            )
            with output.LazyProgress("backup", opts.verbosity >= 0) as bar:
                report = backup_to_bucket(
                    archive,
                    store,
                    jobs=jobs,
                    prune=prune,
                    on_total=bar.start,
                    progress=bar.advance,
                    lease=lease,
                )
        else:
            with output.LazyProgress("backup", opts.verbosity >= 0) as bar:
                report = run_backup(
                    archive,
                    Path(dest),
                    jobs=jobs,
                    on_total=bar.start,
                    progress=bar.advance,
                    wait=wait,
                    on_wait=_waiting,
                )
    s = report.summary
    records = [f.as_dict() for f in report.findings] + [
        {"type": "summary", "command": "backup", "dest": str(dest), **s.as_dict()}
    ]
    text = (
        f"backup to {dest}: {s.copied} copied ({s.bytes / 1e6:.0f} MB), {s.skipped} unchanged, "
        f"{s.failed} failed; {s.instances} instances in the manifest; {s.elapsed:.1f} s"
    )
    if s.unindexed:
        text += f"; {s.unindexed} files not in the index, not backed up (run `pacsctl reindex`)"
    if to_bucket:
        from pacsctl.integrity.offsite import OffsiteSummary, describe_protection

        assert isinstance(s, OffsiteSummary)
        if s.adopted:
            text += f"; {s.adopted} found uploaded by an interrupted run"
        if s.pruned:
            text += f"; {s.pruned} objects pruned"
        if s.worm or s.object_lock or s.versioning == "Enabled":
            text += f"; {describe_protection(s)}"
        else:
            output.warn(describe_protection(s))
    output.print_report(records, as_json, "backup: problems", text)
    record_action(archive.root, AuditEvent.BACKUP, s.as_dict(), dest=str(dest))
    if not report.ok:
        raise typer.Exit(EXIT_INTEGRITY)


def _waiting(holder: LockHolder | None) -> None:
    output.note(f"waiting for {holder.describe() if holder else 'another run'} to finish")


def _taking_over(holder: LockHolder | None, why: str) -> None:
    who = holder.describe() if holder else "an unknown run"
    output.warn(f"taking over the lock of {who}: {why}")


def register(app: typer.Typer) -> None:
    """Add `backup` to the app."""
    app.command("backup")(backup)
