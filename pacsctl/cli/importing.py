"""`pacsctl import`: bulk-import folders, files, zip files and DICOMDIR media."""

from __future__ import annotations

import typer

from pacsctl.archive.audit import AuditEvent, record_action
from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.cli.options import NO_METAVAR, DryRun, Jobs, JsonSummary, OnConflictOpt, PathsArg
from pacsctl.errors import EXIT_INTEGRITY, EXIT_INTERRUPTED


def register(app: typer.Typer) -> None:
    """Add the `import` command."""
    app.command("import")(import_command)


def import_command(
    ctx: typer.Context,
    paths: PathsArg,
    as_json: JsonSummary = False,
    jobs: Jobs = None,
    dry_run: DryRun = False,
    on_conflict: OnConflictOpt = None,
    no_route: bool = typer.Option(
        False, "--no-route", metavar=NO_METAVAR, help="Queue nothing for the routes (`pacsctl route`)."
    ),
) -> None:
    """Import DICOM files into the archive: folders, single files, zip files and CD/DVD media.

    Non-DICOM files are skipped; unreadable DICOM goes to quarantine with the reason. Every file is
    accounted for: files = imported + duplicates + quarantined + skipped. Re-running is safe:
    what is already archived counts as a duplicate. Exit 0; 3 when anything was quarantined, could
    not be read (a damaged zip, a permission error) or a DICOMDIR referenced a file missing from
    the media; 2 when a path given does not exist. What is imported is queued for the routes
    (unless --no-route): the running `serve` forwards it, else `pacsctl route run --once`.

    Example: pacsctl import /media/cdrom/DICOMDIR ~/Downloads/study.zip /data/incoming --json
    """
    from pacsctl.archive.archive import DUPLICATE, STORED, IngestResult
    from pacsctl.ingest.importer import ImportInterrupted, collect_sources, import_sources
    from pacsctl.parallel import default_jobs

    opts = state(ctx)
    sources = collect_sources([str(p) for p in paths])  # a mistyped path: nothing is created
    archive = opts.open_archive_for_dry_run() if dry_run else opts.open_archive(create=True)
    if not archive.exists():
        output.warn(
            f"no archive at {archive.root} yet: planning against an empty one (the real run creates it)"
        )

    with output.progress("importing", total=len(sources), enabled=not as_json) as bar:

        def on_result(result: IngestResult) -> None:
            bar.advance(1, result.size)
            if result.status in (STORED, DUPLICATE):
                return
            if as_json:
                record = {
                    "type": "file",
                    "status": result.status,
                    "path": result.origin,
                    "reason": result.reason,
                }
                if result.sop_instance_uid:
                    record["SOPInstanceUID"] = result.sop_instance_uid
                if result.status == "quarantined" and not dry_run:
                    record["quarantine_path"] = result.path
                output.json_line(record)
            elif result.status == "quarantined" or result.unreadable or state(ctx).verbosity > 0:
                output.warn(f"{result.status}: {result.origin}: {result.reason}")

        try:
            summary = import_sources(
                archive,
                sources,
                jobs=jobs or default_jobs(),
                on_conflict=on_conflict,
                dry_run=dry_run,
                on_result=on_result,
                route=not no_route,
            )
        except ImportInterrupted as stopped:  # Ctrl-C/SIGTERM: say what was done, then exit 130
            summary = stopped.summary
    record = {"type": "summary", **summary.as_dict()}
    rate = summary.bytes / summary.elapsed / 1e6 if summary.elapsed else 0.0
    verb = "would import" if dry_run else "imported"
    text = (
        f"{verb} {summary.imported}, duplicates {summary.duplicates}, quarantined {summary.quarantined}, "
        f"skipped {summary.skipped} of {summary.files} files ({summary.bytes / 1e6:.1f} MB in "
        f"{summary.elapsed:.1f} s, {rate:.1f} MB/s)"
    )
    if summary.missing:
        text += f"; {summary.missing} referenced by a DICOMDIR but missing from the media"
    if summary.unreadable:
        text += (
            f"; {summary.unreadable} could not be read (damaged, no permission, or over max_instance_size)"
        )
    if summary.interrupted:
        text = f"interrupted: {text}; run the same import again to complete it"
    output.summary(record, as_json, text)
    if not dry_run:
        record_action(archive.root, AuditEvent.IMPORT, record)
        if summary.imported and archive.config.routes and not no_route and not as_json:
            _say_who_forwards(archive.root, sorted(archive.config.routes))
    if summary.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if summary.incomplete:
        raise typer.Exit(EXIT_INTEGRITY)


def _say_who_forwards(root, routes: list[str]) -> None:  # noqa: ANN001 - a Path
    """Queued for routes: say whether the running node delivers them or a `route run` must."""
    from pacsctl.node.pidfile import running_node_pid

    names = ", ".join(routes)
    if running_node_pid(root) is not None:
        output.stderr.print(f"queued for route(s) {names}: the running serve forwards them", highlight=False)
    else:
        output.warn(
            f"queued for route(s) {names}: no serve is running; deliver with `pacsctl route run --once`"
        )
