"""`pacsctl attach FILE --study UID`: a PDF or CDA report filed with a study."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from pacsctl.cli import output
from pacsctl.cli.options import JsonSummary
from pacsctl.errors import EXIT_INTEGRITY, UsageError


def attach(
    ctx: typer.Context,
    document: Path = typer.Argument(
        ..., metavar="FILE", help="A PDF, or an HL7 CDA document (XML).", show_default=False
    ),
    study: str = typer.Option(..., "--study", metavar="UID", help="The archived study it belongs to."),
    title: Optional[str] = typer.Option(
        None, "--title", metavar="TEXT", help="Document title (default: the file name)."
    ),
    as_json: JsonSummary = False,
) -> None:
    """File a PDF (or CDA) report with a study, as Encapsulated PDF (CDA) Storage.

    A new instance in a new series of the study, patient and study attributes copied from the
    archived study, the document byte for byte (its true length in Encapsulated Document
    Length); stored through the archive's ingest like any received instance. `export --format
    native` and DCMTK's dcm2pdf give the identical file back.

    Example: pacsctl attach report.pdf --study 1.2.840.113619.2.1 --title "CT report"
    """
    from pacsctl.archive.archive import IngestStatus
    from pacsctl.cli.app import state
    from pacsctl.ingest.documents import attach as run_attach

    if not document.is_file():
        raise UsageError(f"{document} is not a file")
    with state(ctx).open_archive(create=False) as archive:
        attached = run_attach(archive, document, study, title)
    result = attached.result
    record = {
        "type": "summary",
        "status": result.status.value,
        "SOPInstanceUID": attached.sop_instance_uid,
        "SeriesInstanceUID": attached.series_instance_uid,
        "StudyInstanceUID": attached.study_instance_uid,
        "reason": result.reason,
    }
    text = f"attached {document.name} to study {study} as instance {attached.sop_instance_uid}"
    if result.status is not IngestStatus.STORED:
        text = f"{document.name} was not stored ({result.status.value}): {result.reason}"
    output.summary(record, as_json, text)
    if result.status is not IngestStatus.STORED:
        raise typer.Exit(EXIT_INTEGRITY)


def register(app: typer.Typer) -> None:
    """Add `attach` to the app."""
    app.command("attach")(attach)
