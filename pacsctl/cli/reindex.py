"""`pacsctl reindex`: rebuild the index from the files alone (also the restore path)."""

from __future__ import annotations

import typer

from pacsctl.cli import output
from pacsctl.cli.options import Jobs, JsonReport
from pacsctl.errors import EXIT_INTEGRITY


def reindex(
    ctx: typer.Context,
    as_json: JsonReport = False,
    jobs: Jobs = None,
) -> None:
    """Rebuild the index from objects/: every file read, hashed and parsed again.

    A folder holding a backup manifest (a copied backup) is checked against it too: files that
    differ from it are reported and left out of the index. To rebuild an archive from a backup,
    use `pacsctl restore`.
    Exit 0 when every file was indexed, 3 when some could not be.

    Example: pacsctl --archive /srv/pacs reindex --jobs 2
    """
    from pacsctl.cli.app import state
    from pacsctl.integrity.reindex import records_of
    from pacsctl.integrity.reindex import reindex as run_reindex
    from pacsctl.web.metadata import rebuild as rebuild_web_metadata

    opts = state(ctx)
    with (
        opts.open_archive(create=False) as archive,
        output.LazyProgress("reindex", opts.verbosity >= 0) as bar,
    ):
        report = run_reindex(archive, jobs=jobs, on_total=bar.start, progress=bar.advance)
        # the CLI composes: integrity/ knows nothing of the web side's derived caches
        rebuild_web_metadata(archive)
    records = list(records_of(report))
    s = report.summary
    checked = (
        f", {s.checked_against_manifest} matched the backup manifest" if s.checked_against_manifest else ""
    )
    checked += f", {s.adopted} misplaced files moved to where they belong" if s.adopted else ""
    checked += (
        f", {s.quarantined} files that are no instance here moved to quarantine" if s.quarantined else ""
    )
    output.print_report(
        records,
        as_json,
        "reindex: files not indexed",
        f"reindex: {s.indexed} of {s.files} files indexed ({s.bytes / 1e6:.0f} MB) in {s.elapsed:.1f} s"
        f"{checked}; {s.problems} problems",
    )
    if not report.ok:
        raise typer.Exit(EXIT_INTEGRITY)


def register(app: typer.Typer) -> None:
    """Add `reindex` to the app."""
    app.command("reindex")(reindex)
