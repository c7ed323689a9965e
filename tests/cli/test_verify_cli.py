"""`pacsctl verify`: exit codes, the NDJSON shape, --report, the table, and repair from a backup."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest

from tests.helpers import invoke_cli
from tests.integrity.test_verify import dead_pid, flip_bit, make_archive

SUMMARY_INTS = ("checked", "hashed", "bytes", "problems", "repaired", "cleaned")
PROBLEM_KEYS = {"type", "path", "SOPInstanceUID", "problem", "where", "detail", "action"}


@pytest.fixture
def cli() -> Callable[..., Any]:
    """These tests run pacsctl in-process (`invoke_cli`): no Python start per command."""
    return invoke_cli


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def records(archive_dir: Path, ct_factory: Any, dicom_test_files: list[Path]) -> list[dict]:
    """An archive of 4 CT slices and pydicom's MR_small; its index records, in path order."""
    extra = [p for p in dicom_test_files if p.name == "MR_small.dcm"]
    with make_archive(archive_dir, ct_factory.series(4) + extra) as archive:
        return sorted(archive.index.iter_instances(), key=lambda r: r["path"])


def test_without_an_archive_is_a_usage_error(archive_dir: Path, cli: Callable[..., Any]) -> None:
    proc = cli("verify")
    assert proc.returncode == 2 and "error:" in proc.stderr and "Traceback" not in proc.stderr


def test_clean_archive_exits_0_with_a_summary(records: list[dict], cli: Callable[..., Any]) -> None:
    proc = cli("verify", "--json")
    assert proc.returncode == 0, proc.stderr
    [summary] = lines(proc.stdout)
    assert summary["type"] == "summary" and summary["command"] == "verify" and summary["ok"] is True
    assert all(isinstance(summary[k], int) for k in SUMMARY_INTS)
    assert (summary["checked"], summary["hashed"], summary["problems"]) == (5, 5, 0)
    assert summary["bytes"] == sum(r["size"] for r in records)


def test_damage_exits_3_one_record_per_problem_and_report_file(
    records: list[dict], archive_dir: Path, cli: Callable[..., Any], tmp_path: Path
) -> None:
    flip_bit(archive_dir / records[0]["path"])
    (archive_dir / records[1]["path"]).unlink()
    report = tmp_path / "mail" / "verify.ndjson"
    report.parent.mkdir()

    proc = cli("verify", "--json", "--report", report, "--jobs", "2")

    assert proc.returncode == 3, proc.stderr
    out = lines(proc.stdout)
    problems, summary = out[:-1], out[-1]
    assert {(p["problem"], p["path"], p["SOPInstanceUID"], p["where"]) for p in problems} == {
        ("hash_mismatch", records[0]["path"], records[0]["SOPInstanceUID"], "archive"),
        ("missing", records[1]["path"], records[1]["SOPInstanceUID"], "archive"),
    }
    assert len(problems) == 2
    assert all(set(p) == PROBLEM_KEYS and p["type"] == "problem" for p in problems)
    assert summary["problems"] == 2 and summary["ok"] is False
    assert report.read_text() == proc.stdout


def test_table_and_human_summary(records: list[dict], archive_dir: Path, cli: Callable[..., Any]) -> None:
    os.truncate(archive_dir / records[2]["path"], 100)
    proc = cli("verify")
    assert proc.returncode == 3
    assert "wrong_size" in proc.stdout and records[2]["SOPInstanceUID"] in proc.stdout
    assert "1 problems" in proc.stderr and "5 files checked" in proc.stderr


def test_report_is_written_also_without_json(records: list[dict], cli: Callable[..., Any], tmp_path: Path) -> None:
    report = tmp_path / "verify.ndjson"
    proc = cli("verify", "--report", report)
    assert proc.returncode == 0
    [summary] = lines(report.read_text())
    assert summary["ok"] is True


def test_quick_and_sample(records: list[dict], archive_dir: Path, cli: Callable[..., Any]) -> None:
    flip_bit(archive_dir / records[0]["path"])
    quick = cli("verify", "--quick", "--json")
    assert quick.returncode == 0 and lines(quick.stdout)[-1]["hashed"] == 0  # a flipped bit keeps the size
    sample = cli("verify", "--sample", "1", "--json")
    assert sample.returncode == 3 and lines(sample.stdout)[-1]["hashed"] == 5
    assert cli("verify", "--quick", "--sample", "0.5").returncode == 2
    assert cli("verify", "--sample", "1.5").returncode == 2


def test_leftover_temp_files_are_removed_and_reported_exit_0(records: list[dict], archive_dir: Path, cli: Callable[..., Any]) -> None:
    leftover = archive_dir / "tmp" / f"{dead_pid()}-4242.part"
    leftover.write_bytes(b"partial")
    proc = cli("verify", "--json")
    assert proc.returncode == 0, proc.stdout
    [record, summary] = lines(proc.stdout)
    assert (record["problem"], record["action"], summary["cleaned"]) == ("leftover_temp", "removed", 1)
    assert not leftover.exists()


def test_backup_check_and_repair_from_it(records: list[dict], archive_dir: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    assert cli("backup", dest, "--json").returncode == 0
    assert cli("verify", "--backup", dest).returncode == 0

    flip_bit(dest / records[3]["path"])
    checked = cli("verify", "--backup", dest, "--json")
    assert checked.returncode == 3
    [problem] = lines(checked.stdout)[:-1]
    assert (problem["where"], problem["problem"], problem["path"]) == ("backup", "hash_mismatch", records[3]["path"])

    original = (archive_dir / records[0]["path"]).read_bytes()
    (archive_dir / records[0]["path"]).unlink()
    repaired = cli("verify", "--repair-from", dest, "--json")
    assert repaired.returncode == 3  # damage was found (and repaired): worth a mail
    [problem] = lines(repaired.stdout)[:-1]
    assert (problem["problem"], problem["action"]) == ("missing", "restored from backup")
    assert lines(repaired.stdout)[-1]["repaired"] == 1
    assert (archive_dir / records[0]["path"]).read_bytes() == original
    assert cli("verify").returncode == 0
    assert cli("verify", "--backup", dest, "--repair-from", dest).returncode == 2


def test_backup_checked_alone_when_the_archive_is_gone(records: list[dict], archive_dir: Path, cli: Callable[..., Any], tmp_path: Path) -> None:
    dest = tmp_path / "backup"
    assert cli("backup", dest).returncode == 0
    proc = cli("verify", "--backup", dest, "--json", env={"PACSCTL_ARCHIVE": str(tmp_path / "gone")})
    assert proc.returncode == 0, proc.stderr
    assert "checking the backup against its manifest only" in proc.stderr
    assert cli("verify", "--backup", tmp_path / "nothing-here").returncode == 2


def test_quiet_clean_run_prints_nothing(records: list[dict], cli: Callable[..., Any]) -> None:
    proc = cli("-q", "verify")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


@pytest.mark.parametrize("command", ["verify", "backup", "reindex"])
def test_help_says_what_the_command_does(command: str, cli: Callable[..., Any]) -> None:
    proc = cli(command, "--help")
    assert proc.returncode == 0 and "exit 0" in proc.stdout.lower() and "3" in proc.stdout


def test_report_into_a_missing_folder_is_a_usage_error(records: list[dict], cli: Callable[..., Any], tmp_path: Path) -> None:
    proc = cli("verify", "--report", tmp_path / "no" / "such" / "r.ndjson")
    assert proc.returncode == 2 and "cannot write the report" in proc.stderr


def test_table_is_capped_json_is_not(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from pacsctl.cli import output

    monkeypatch.setattr(output, "TABLE_LIMIT", 2)
    found = [{"type": "problem", "path": f"objects/{i}.dcm", "SOPInstanceUID": "", "problem": "missing" if i < 4 else "unknown_file",
              "where": "archive", "detail": "", "action": ""} for i in range(6)]
    output.print_findings(found, False, "t")
    out, err = capsys.readouterr()
    assert "objects/1.dcm" in out and "objects/2.dcm" not in out
    assert "4 more not shown (2 missing, 2 unknown_file)" in err
    output.print_report(found + [{"type": "summary"}], True, "t", "summary line")
    assert len(lines(capsys.readouterr().out)) == 7


def test_only_cleaned_leftovers_say_cleaned_everywhere_and_exit_0(records: list[dict], archive_dir: Path, cli: Callable[..., Any]) -> None:
    """Removed leftovers are no problem: the table title, the human line, the JSON summary and
    the exit code all say so (it said "problems found" and exited 0)."""
    for name in (f"{dead_pid()}-4242.part", f"{dead_pid()}-4343.part"):
        (archive_dir / "tmp" / name).write_bytes(b"partial")
    proc = cli("verify")
    assert proc.returncode == 0, proc.stderr
    assert "problems found" not in proc.stdout + proc.stderr
    assert "verify: cleaned" in proc.stdout and "leftover_temp" in proc.stdout
    assert "no problems, 2 leftover temp files cleaned" in proc.stderr

    (archive_dir / "tmp" / f"{dead_pid()}-4444.part").write_bytes(b"partial")
    as_json = cli("verify", "--json")
    summary = lines(as_json.stdout)[-1]
    assert as_json.returncode == 0
    assert (summary["status"], summary["problems"], summary["cleaned"], summary["ok"]) == ("cleaned", 0, 1, True)


def test_damage_and_leftovers_say_problems_and_exit_3(records: list[dict], archive_dir: Path, cli: Callable[..., Any]) -> None:
    (archive_dir / "tmp" / f"{dead_pid()}-4242.part").write_bytes(b"partial")
    (archive_dir / records[0]["path"]).unlink()
    proc = cli("verify", "--json")
    summary = lines(proc.stdout)[-1]
    assert proc.returncode == 3
    assert (summary["status"], summary["problems"], summary["cleaned"], summary["ok"]) == ("problems", 1, 1, False)
    human = cli("verify")
    assert "verify: problems found" in human.stdout and "1 problems" in human.stderr


def test_the_report_is_private_whatever_the_umask(records: list[dict], tmp_path: Path) -> None:
    import subprocess
    import sys

    from tests.helpers import cli_env

    report = tmp_path / "verify.ndjson"
    for _ in range(2):  # created, then replaced
        proc = subprocess.run([sys.executable, "-m", "pacsctl", "verify", "--report", str(report)], env=cli_env(),
                              capture_output=True, text=True, preexec_fn=lambda: os.umask(0), timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert report.stat().st_mode & 0o777 == 0o600
    assert lines(report.read_text())[-1]["type"] == "summary"
