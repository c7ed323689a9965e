"""`pacsctl anonymize`: de-identified copies after DICOM PS3.15 Annex E (the core is
`pacsctl.anonymize`; this module parses flags and prints)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from pacsctl.anonymize.choices import BurnedIn
from pacsctl.cli import output
from pacsctl.cli.app import state
from pacsctl.cli.options import NO_METAVAR, DryRun, Jobs, choices
from pacsctl.errors import EXIT_INTEGRITY, UsageError


def register(app: typer.Typer) -> None:
    """Add the `anonymize` command."""
    app.command("anonymize")(anonymize_command)


def _flag(name: str, text: str):  # one option column of Table E.1-1
    return typer.Option(name, metavar=NO_METAVAR, help=text, rich_help_panel="Options of PS3.15 Table E.1-1")


def anonymize_command(
    ctx: typer.Context,
    paths: Annotated[
        Optional[list[Path]],
        typer.Argument(
            metavar="PATH", help="Files, folders (recursive), zip files, DICOMDIR files.", show_default=False
        ),
    ] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out", "-o", metavar="DIR", help="Write the anonymized files here (never over the inputs)."
        ),
    ] = None,
    studies: Annotated[
        list[str],
        typer.Option("--study", metavar="UID", help="Anonymize this archived study (repeatable)."),
    ] = [],
    filters: Annotated[
        list[str],
        typer.Option(
            "-k",
            "--filter",
            metavar="KEY=VALUE",
            help="Anonymize the archived instances this selects (`pacsctl ls` matching; repeatable).",
        ),
    ] = [],
    into_archive: Annotated[
        bool,
        typer.Option(
            "--into-archive",
            metavar=NO_METAVAR,
            help="Store the anonymized copies in the archive as new studies.",
        ),
    ] = False,
    key: Annotated[
        Optional[str],
        typer.Option(
            "--key",
            metavar="SECRET",
            envvar="PACSCTL_ANONYMIZE_KEY",
            show_envvar=True,
            help="Secret for UIDs, pseudonyms and date offsets: the same key, the same results "
            "(default: a random key per run). Prefer --key-file: a command line is visible to other users.",
        ),
    ] = None,
    key_file: Annotated[
        Optional[Path], typer.Option("--key-file", metavar="FILE", help="Read the secret from FILE.")
    ] = None,
    keep_dates: Annotated[
        bool, _flag("--keep-dates", "Keep dates and times (Retain Longitudinal, Full Dates).")
    ] = False,
    shift_dates: Annotated[
        bool,
        _flag(
            "--shift-dates",
            "Move every date by one keyed offset per patient (Modified Dates); ages stay right.",
        ),
    ] = False,
    keep_uids: Annotated[bool, _flag("--keep-uids", "Keep the original UIDs (Retain UIDs).")] = False,
    keep_device: Annotated[
        bool, _flag("--keep-device", "Keep device identity (serial numbers, station names).")
    ] = False,
    keep_institution: Annotated[
        bool, _flag("--keep-institution", "Keep institution and department names.")
    ] = False,
    keep_patient_characteristics: Annotated[
        bool, _flag("--keep-patient-characteristics", "Keep sex, age, size, weight and the like.")
    ] = False,
    clean_descriptors: Annotated[
        bool,
        _flag(
            "--clean-descriptors", "Keep descriptions and comments, with the patient's identifiers cut out."
        ),
    ] = False,
    keep_safe_private: Annotated[
        bool,
        _flag("--keep-safe-private", "Keep the private elements on pacsctl's safe list (creator checked)."),
    ] = False,
    clean_structured_content: Annotated[
        bool, _flag("--clean-structured-content", "Keep SR content and acquisition context, cleaned.")
    ] = False,
    clean_graphics: Annotated[
        bool, _flag("--clean-graphics", "Keep graphic annotations, overlays and curves, text cleaned.")
    ] = False,
    burned_in: Annotated[
        BurnedIn,
        typer.Option(
            "--burned-in",
            metavar=choices(BurnedIn),
            case_sensitive=False,
            help="Images that may show burned-in text (BurnedInAnnotation YES; US, SC, XC, ES, OT "
            "unless marked NO): refuse them, write them with a warning, or write them.",
        ),
    ] = BurnedIn.REFUSE,
    profile: Annotated[
        Optional[Path],
        typer.Option(
            "--profile", metavar="FILE", help="Site rules (TOML): keep, remove or replace attributes."
        ),
    ] = None,
    patient_map: Annotated[
        Optional[Path],
        typer.Option(
            "--patient-map", metavar="CSV", help="Pseudonyms to use: lines of real Patient ID,pseudonym."
        ),
    ] = None,
    map_out: Annotated[
        Optional[Path],
        typer.Option(
            "--map-out",
            metavar="FILE",
            help="Write the original -> new mapping (UIDs, IDs, offsets), mode 0600.",
        ),
    ] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", metavar=NO_METAVAR, help="NDJSON: one record per input file, then a summary."),
    ] = False,
    dry_run: DryRun = False,
    jobs: Jobs = None,
) -> None:
    """De-identify DICOM files into a new folder (PS3.15 Annex E, Basic Profile and its options).

    Every attribute of Table E.1-1 is handled at every depth, private elements are removed,
    UIDs are replaced by keyed ones (references still line up; the same key gives the same UIDs
    in later runs), patients get keyed pseudonyms, and the output is marked PatientIdentityRemoved
    YES with the methods used. After de-identifying, each file is scanned for the patient's
    name, IDs, birth date, accession number and institution: a hit fails that file (leak). The
    inputs are only read; each output is written atomically. Exit 0; 3 when a file was refused
    (burned-in text), leaked or failed.

    PATHs are files, folders and zips; --study and -k read from the archive instead. --into-archive
    stores the copies in the archive (through import's steps) instead of --out.

    Example: pacsctl anonymize /data/study --out /data/anon --key-file ~/.anon-key --shift-dates --json
    """
    from pacsctl.anonymize.identity import random_key, read_key_file, read_patient_map, write_map
    from pacsctl.anonymize.profile import Options, SiteProfile
    from pacsctl.anonymize.run import Settings, anonymize_inputs, archive_inputs, check_output_folder
    from pacsctl.dicom.matching import parse_key_values
    from pacsctl.ingest.importer import collect_sources
    from pacsctl.parallel import default_jobs

    selection = parse_key_values(filters)
    if studies:
        if "StudyInstanceUID" in selection:
            raise UsageError("give the study either with --study or with -k StudyInstanceUID, not both")
        selection["StudyInstanceUID"] = "\\".join(studies)
    if paths and selection:
        raise UsageError("give PATHs or an archive selection (--study, -k), not both")
    if not paths and not selection:
        raise UsageError(
            "nothing to anonymize", hint="give files, folders or zips, or --study UID / -k KEY=VALUE"
        )
    if out is not None and into_archive:
        raise UsageError("give --out DIR or --into-archive, not both")
    if out is None and not into_archive and not dry_run:
        raise UsageError("no output", hint="give --out DIR or --into-archive (or --dry-run)")
    if into_archive and keep_uids:
        raise UsageError(
            "--keep-uids with --into-archive would store the copies under their originals' UIDs",
            hint="write them to --out DIR instead",
        )
    if key is not None and key_file is not None:
        raise UsageError("--key and --key-file exclude each other", hint="give the secret one way")
    options = Options(
        keep_dates=keep_dates,
        shift_dates=shift_dates,
        keep_uids=keep_uids,
        keep_device=keep_device,
        keep_institution=keep_institution,
        keep_patient_characteristics=keep_patient_characteristics,
        clean_descriptors=clean_descriptors,
        keep_safe_private=keep_safe_private,
        clean_structured_content=clean_structured_content,
        clean_graphics=clean_graphics,
        burned_in=burned_in,
    )
    secret = read_key_file(key_file) if key_file else (key.encode("utf-8") if key else None)
    if secret is not None and not secret:
        raise UsageError("the key is empty", hint="give a long random secret")
    settings = Settings(
        key=secret or random_key(),
        options=options,
        profile=SiteProfile.load(profile) if profile else SiteProfile(),
        patient_map=read_patient_map(patient_map) if patient_map else {},
        record_map=map_out is not None,
    )
    opts = state(ctx)
    if out is not None:
        check_output_folder(out, [str(p) for p in paths or []])
    archive = None
    if selection or into_archive:
        if into_archive and dry_run and not selection:
            archive = opts.open_archive_for_dry_run()
        else:
            archive = opts.open_archive(create=into_archive and not selection and not dry_run)
    if archive is not None and selection:
        sources: list = archive_inputs(archive, selection)
    else:
        sources = collect_sources([str(p) for p in paths or []])
    verbose = opts.verbosity > 0

    with output.progress("anonymizing", total=len(sources), enabled=not as_json) as bar:

        def on_result(result) -> None:
            bar.advance(1, result.size)
            if as_json:
                output.json_line(result.as_record())
            elif result.status.value in ("refused", "leak", "failed"):
                output.warn(f"{result.status.value}: {result.source}: {result.reason}")
            elif result.warning or (verbose and result.status.value == "skipped"):
                output.warn(f"{result.status.value}: {result.source}: {result.reason or result.warning}")

        try:
            summary, mapping = anonymize_inputs(
                sources,
                out,
                settings,
                jobs=jobs or default_jobs(),
                dry_run=dry_run,
                random_key=secret is None,
                into=archive if into_archive else None,
                on_result=on_result,
            )
        finally:
            if archive is not None:
                archive.close()
    if map_out is not None and not dry_run:
        summary.mapped = write_map(map_out, mapping)
    record = {"type": "summary", **summary.as_dict()}
    verb = "would write" if dry_run else "wrote"
    text = (
        f"{verb} {summary.written}, refused {summary.refused}, leaks {summary.leak}, "
        f"failed {summary.failed}, skipped {summary.skipped} of {summary.files} files "
        f"in {summary.elapsed:.1f} s"
    )
    if summary.random_key:
        text += "; a random key was used: a later run gives other UIDs (use --key-file to link runs)"
    output.summary(record, as_json, text)
    if archive is not None and not dry_run:  # studies taken from the archive, or stored into it
        from pacsctl.archive.audit import AuditEvent, record_action

        record_action(
            archive.root,
            AuditEvent.ANONYMIZE,
            summary.as_dict(),
            selection=selection,
            argv=without_secret(sys.argv[1:]),
            dest="archive" if into_archive else str(out),
        )
    if summary.incomplete:
        raise typer.Exit(EXIT_INTEGRITY)


def without_secret(argv: list[str]) -> list[str]:
    """The command line for the audit log without the key (`--key SECRET`, `--key=SECRET`)."""
    masked: list[str] = []
    for position, token in enumerate(argv):
        if token.startswith("--key="):
            token = "--key=…"
        elif position and argv[position - 1] == "--key":
            token = "…"
        masked.append(token)
    return masked
