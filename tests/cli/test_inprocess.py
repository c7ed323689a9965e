"""The CLI run in-process (typer's CliRunner), through the same error boundary as the console
script: ls, quarantine, nodes, config, audit, import --dry-run, verify.

Subprocess tests stay where a real process matters (signals, crashes, real peers); these need
no Python start per command. The global options live in one State per run (`ctx.obj`), so runs
in one process do not leak into each other.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pacsctl.archive.audit import AuditLog
from pacsctl.cli.app import app, run

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


def invoke(*args: str | Path):
    """Run `pacsctl ARGS` in this process; the result has exit_code, stdout and stderr."""
    return CliRunner().invoke(app, [str(a) for a in args], env=ENV)


def ndjson(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def archive(archive_dir: Path, ct_factory, tmp_path: Path) -> Path:
    """An archive holding one study of three CT instances (imported in-process)."""
    ct_factory.series(3, patient_id="P1")
    result = invoke("import", "--jobs", "1", tmp_path / "ct")
    assert result.exit_code == 0, result.stderr
    return archive_dir


def test_ls_levels_json_and_csv(archive: Path) -> None:
    studies = ndjson(invoke("ls", "--json").stdout)
    assert len(studies) == 1 and studies[0]["NumberOfStudyRelatedInstances"] == 3
    instances = ndjson(invoke("ls", "--level", "instance", "--json").stdout)
    assert len(instances) == 3
    csv = invoke("ls", "--level", "series", "--csv").stdout.splitlines()
    assert csv[0].startswith("PatientID,") and len(csv) == 2
    assert ndjson(invoke("ls", "-k", "PatientID=NOPE", "--json").stdout) == []


def test_ls_usage_errors_are_one_line_with_a_hint(archive: Path) -> None:
    both = invoke("ls", "--json", "--csv")
    assert both.exit_code == 2
    assert both.stderr.splitlines()[0] == "error: --json and --csv exclude each other"
    typo = invoke("ls", "--jsn")
    assert typo.exit_code == 2
    assert typo.stderr.splitlines() == ["error: no such option --jsn",
                                        "hint: did you mean --json? (see pacsctl ls --help)"]


def test_import_dry_run_writes_nothing(archive_dir: Path, ct_factory, tmp_path: Path) -> None:
    ct_factory.series(2)
    result = invoke("import", "--dry-run", "--json", tmp_path / "ct")
    assert result.exit_code == 0, result.stderr
    summary = ndjson(result.stdout)[-1]
    assert (summary["type"], summary["imported"], summary["dry_run"]) == ("summary", 2, True)
    assert not list(archive_dir.rglob("*.dcm"))


def test_quarantine_lists_what_could_not_be_stored(archive_dir: Path, broken_dicom_files, tmp_path: Path) -> None:
    result = invoke("import", "--json", *broken_dicom_files)
    assert result.exit_code == 3
    items = ndjson(invoke("quarantine", "--json").stdout)
    assert len(items) == len(broken_dicom_files)
    assert all(item["reason"] and item["path"] for item in items)


def test_nodes_add_list_remove(archive_dir: Path) -> None:
    assert invoke("nodes", "add", "old-pacs", "--aet", "OLDPACS", "--host", "10.0.0.5", "--port", "104").exit_code == 0
    nodes = ndjson(invoke("nodes", "list", "--json").stdout)
    assert [(n["name"], n["aet"], n["port"]) for n in nodes] == [("old-pacs", "OLDPACS", 104)]
    again = invoke("nodes", "add", "old-pacs", "--aet", "X", "--host", "h", "--port", "1")
    assert again.exit_code == 2 and "use --replace" in again.stderr
    assert invoke("nodes", "remove", "old-pacs").exit_code == 0
    missing = invoke("nodes", "remove", "old-pacs")
    assert missing.exit_code == 2 and missing.stderr.startswith("error: no node named")


def test_config_set_and_show(archive_dir: Path) -> None:
    assert invoke("config", "set", "ae_title", "MYPACS").exit_code == 0
    assert invoke("config", "set", "on_conflict", "replace").exit_code == 0
    shown = ndjson(invoke("config", "show", "--json").stdout)[0]
    assert (shown["ae_title"], shown["on_conflict"], shown["archive"]) == ("MYPACS", "replace", str(archive_dir))
    bad = invoke("config", "set", "port", "99999")
    assert bad.exit_code == 2 and bad.stderr.startswith("error: invalid port")


def test_audit_filters_by_event(archive: Path) -> None:
    log = AuditLog(archive / "audit.log")
    log.append({"event": "associate", "calling_aet": "CT01"})
    log.append({"event": "store", "calling_aet": "CT01", "SOPInstanceUID": "1.2.3", "status": 0})
    log.close()
    stores = [r for r in ndjson(invoke("audit", "--event", "store", "--json").stdout) if r["event"] == "store"]
    assert [r["SOPInstanceUID"] for r in stores] == ["1.2.3"]
    assert all(r["event"] == "store" for r in ndjson(invoke("audit", "-e", "store", "--json").stdout))
    assert invoke("audit", "--event", "stor").exit_code == 2


def test_verify_clean_then_damaged(archive: Path) -> None:
    clean = invoke("verify", "--json", "--jobs", "1")
    assert clean.exit_code == 0, clean.stderr
    assert ndjson(clean.stdout)[-1]["type"] == "summary"
    victim = next((archive / "objects").rglob("*.dcm"))
    victim.write_bytes(victim.read_bytes()[:-10])
    damaged = invoke("verify", "--json", "--jobs", "1")
    assert damaged.exit_code == 3
    assert [r["problem"] for r in ndjson(damaged.stdout) if r["type"] == "problem"] == ["wrong_size"]


def test_runs_in_one_process_do_not_share_global_options(archive: Path, tmp_path: Path) -> None:
    """--quiet and --archive of one run are gone in the next (they used to be module globals)."""
    other = tmp_path / "other"
    assert invoke("--archive", other, "nodes", "add", "n", "--aet", "A", "--host", "h", "--port", "1").exit_code == 0
    assert ndjson(invoke("nodes", "list", "--json").stdout) == []  # back on $PACSCTL_ARCHIVE
    (tmp_path / "ct" / "junk.txt").write_text("not DICOM")
    quiet = invoke("-q", "import", "--jobs", "1", tmp_path / "ct")
    assert quiet.stderr == ""
    loud = invoke("import", "--jobs", "1", tmp_path / "ct")
    assert "duplicates 3" in loud.stderr


def test_run_returns_the_exit_code_without_exiting(archive: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["ls", "--json"]) == 0
    assert len(ndjson(capsys.readouterr().out)) == 1
    assert run(["ls", "--level", "studies"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: invalid value for '--level'") and "hint: see pacsctl ls --help" in err
    assert run(["--archive", str(archive / "objects" / "nope"), "verify"]) in (1, 2)


def test_a_sub_app_run_alone_does_not_see_the_previous_runs_options(archive: Path, tmp_path: Path) -> None:
    """The global options used to live in a module-level State: a group invoked on its own (as
    a test or another program would) saw the --archive and --quiet of the run before it."""
    from pacsctl.cli.nodes import nodes_app

    other = tmp_path / "other"
    assert invoke("-q", "--archive", other, "nodes", "add", "n", "--aet", "A", "--host", "h", "--port", "1").exit_code == 0
    alone = CliRunner().invoke(nodes_app, ["list", "--json"], env=ENV)
    assert alone.exit_code == 0, alone.output
    assert ndjson(alone.stdout) == []  # $PACSCTL_ARCHIVE's nodes, not those of `other`
