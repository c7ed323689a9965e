"""`pacsctl backup DEST`: an incremental, verifiable replica of the archive."""

from __future__ import annotations

import typer

from pacsctl.archive.audit import AuditEvent, record_action
from pacsctl.cli import output
from pacsctl.cli.options import CopyJobs, DestArg, JsonReport
from pacsctl.errors import EXIT_INTEGRITY


def backup(
    ctx: typer.Context,
    dest: DestArg,
    as_json: JsonReport = False,
    jobs: CopyJobs = None,
) -> None:
    """Copy what is new or changed to DEST, with a manifest to verify and restore from.

    A consistent snapshot of what the archive held when the backup started, safe while `serve`
    writes. Each copy is checked against the SHA-256 recorded at ingest and written atomically
    and durably. Exit 0 when every file is backed up, 3 when some could not be.

    Examples: pacsctl backup /mnt/nas/pacs; pacsctl verify --backup /mnt/nas/pacs

    Restore when the archive is lost: pacsctl verify --backup /mnt/nas/pacs (1. the backup is
    intact); cp -a /mnt/nas/pacs /srv/pacs (2. copy it to where the archive will live);
    pacsctl --archive /srv/pacs reindex (3. rebuild the index, each file checked against the
    manifest); rm /srv/pacs/backup-manifest.ndjson /srv/pacs/backup.lock (4. it is an archive now,
    not a backup).
    """
    from pacsctl.cli.app import state
    from pacsctl.integrity.backup import backup as run_backup

    opts = state(ctx)
    with (
        opts.open_archive(create=False) as archive,
        output.LazyProgress("backup", opts.verbosity >= 0) as bar,
    ):
        report = run_backup(archive, dest, jobs=jobs, on_total=bar.start, progress=bar.advance)
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
    output.print_report(records, as_json, "backup: problems", text)
    record_action(archive.root, AuditEvent.BACKUP, s.as_dict(), dest=str(dest))
    if not report.ok:
        raise typer.Exit(EXIT_INTEGRITY)


def register(app: typer.Typer) -> None:
    """Add `backup` to the app."""
    app.command("backup")(backup)
