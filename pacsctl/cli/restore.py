"""`pacsctl restore SOURCE`: rebuild an archive from a backup (a folder or s3://), or part of it."""

from __future__ import annotations

import typer

from pacsctl.archive.audit import AuditEvent, record_action
from pacsctl.cli import output
from pacsctl.cli.options import CopyJobs, EndpointUrl, JsonReport, Keys, Studies
from pacsctl.errors import EXIT_INTEGRITY


def restore(
    ctx: typer.Context,
    source: str = typer.Argument(
        ...,
        metavar="SOURCE",
        help="The backup: a folder (`pacsctl backup DEST`) or s3://BUCKET/PREFIX.",
        show_default=False,
    ),
    studies: Studies = [],
    keys: Keys = [],
    as_json: JsonReport = False,
    jobs: CopyJobs = None,
    endpoint_url: EndpointUrl = None,
) -> None:
    """Rebuild the archive (--archive DIR, a new or empty folder) from a backup alone.

    Every instance is copied back and checked against the manifest's SHA-256, then the index is
    rebuilt and the archive verified. Interrupted? Run it again: what is in place is kept. With
    --study UID or -k KEY=VALUE, only those instances are brought back into an existing archive
    (what was deleted by mistake); keys other than UIDs read every backed-up header. Exit 3 when
    anything could not be restored, with the reason per instance.

    Restore when the archive is lost: pacsctl verify --backup /mnt/nas/pacs (1. the backup is
    intact); pacsctl --archive /srv/pacs restore /mnt/nas/pacs (2. copy, check, reindex, verify).

    Examples: pacsctl --archive /srv/pacs restore s3://pacs-offsite/site-a;
    pacsctl restore /mnt/nas/pacs --study 1.2.840.113619.2.55.3
    """
    from pacsctl.cli.app import state
    from pacsctl.config import resolve_archive_dir
    from pacsctl.dicom.matching import parse_key_values
    from pacsctl.integrity.restore import open_source, restore_archive, restore_part

    opts = state(ctx)
    filters = parse_key_values(keys)
    backup = open_source(source, endpoint_url, jobs)
    if studies or filters:
        with (
            opts.open_archive(create=False) as archive,
            output.LazyProgress("restore", opts.verbosity >= 0) as bar,
        ):
            report = restore_part(
                backup,
                archive,
                study_uids=studies,
                filters=filters,
                jobs=jobs,
                on_total=bar.start,
                progress=bar.advance,
            )
        root = archive.root
    else:
        root = resolve_archive_dir(opts.archive).absolute()
        with output.LazyProgress("restore", opts.verbosity >= 0) as bar:
            report = restore_archive(backup, root, jobs=jobs, on_total=bar.start, progress=bar.advance)
    s = report.summary
    records = [f.as_dict() for f in report.findings] + [
        {"type": "summary", "command": "restore", "archive": str(root), **s.as_dict()}
    ]
    text = (
        f"restore from {s.source}: {s.restored} restored ({s.bytes / 1e6:.0f} MB), "
        f"{s.present} already there, "
        f"{s.failed} failed of {s.selected}"
    )
    if not (studies or filters):
        text += f"; {s.indexed} indexed; verify {'ok' if s.verified else 'found problems'}"
    text += f"; {s.elapsed:.1f} s"
    output.print_report(records, as_json, "restore: not restored", text)
    record_action(root, AuditEvent.RESTORE, s.as_dict(), source=source)
    if not report.ok:
        raise typer.Exit(EXIT_INTEGRITY)


def register(app: typer.Typer) -> None:
    """Add `restore` to the app."""
    app.command("restore")(restore)
