"""Typed choices (issue 9 §2): enums defined once, listed by `--help` and by the completions.

`--level`, `--on-conflict`, `audit --event` and `config set KEY` used to be free text: the help
named no choices, the shells completed nothing, and a typo was found late (or never).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from pacsctl.archive.archive import IngestResult, IngestStatus
from pacsctl.archive.audit import AuditEvent
from pacsctl.cli.app import app
from pacsctl.cli.completions import generate
from pacsctl.config import OnConflict, SettingKey
from pacsctl.dicom.matching import LEVELS, QueryLevel, level_from_name
from pacsctl.integrity.findings import Finding, Problem
from tests.helpers import REPO_ROOT, bash_complete



def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command, choices", [
    (("ls",), "patient|study|series|instance"),
    (("query",), "patient|study|series|instance"),
    (("move",), "patient|study|series|instance"),
    (("get",), "patient|study|series|instance"),
    (("import",), "keep|replace"),
])
def test_help_lists_the_choices(command: tuple[str, ...], choices: str) -> None:
    assert choices in _help(*command)


def test_audit_help_names_every_event() -> None:
    words = set(re.findall(r"\w+", _help("audit")))
    assert {e.value for e in AuditEvent} <= words


def test_config_set_help_names_every_settable_key() -> None:
    text = _help("config", "set")
    assert all(key.value in text for key in SettingKey)


@pytest.mark.parametrize("line, expected", [
    ("pacsctl ls --level ", {"patient", "study", "series", "instance", "image"}),
    ("pacsctl query NODE -l ", {"patient", "study", "series", "instance", "image"}),
    ("pacsctl import --on-conflict ", {"keep", "replace"}),
    ("pacsctl audit --event ", {e.value for e in AuditEvent}),
    ("pacsctl config set ", {k.value for k in SettingKey}),
])
def test_bash_completes_the_choices(tmp_path: Path, line: str, expected: set[str]) -> None:
    script = tmp_path / "pacsctl.bash"
    script.write_text(generate(app, "bash"))
    assert set(bash_complete(script, line, tmp_path)) == expected


@pytest.mark.parametrize("args", [
    ["ls", "--level", "studies"],
    ["import", "--on-conflict", "overwrite", "x"],
    ["audit", "--event", "stor"],
    ["config", "set", "aetitle", "X"],
])
def test_a_value_outside_the_choices_is_a_usage_error(args: list[str], tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["--archive", str(tmp_path / "a"), *args])
    assert result.exit_code == 2
    assert not (tmp_path / "a").exists()  # refused before anything ran


@pytest.mark.parametrize("typed, level", [("INSTANCE", QueryLevel.IMAGE), ("image", QueryLevel.IMAGE),
                                          ("Study", QueryLevel.STUDY)])
def test_levels_parse_case_insensitively(typed: str, level: QueryLevel) -> None:
    root = typer.main.get_command(app)
    ctx = root.make_context("pacsctl", ["ls", "--level", typed])
    ls = root.get_command(ctx, "ls")
    sub = ls.make_context("ls", ["--level", typed], parent=ctx)
    assert sub.params["level"].query_level is level


def test_json_values_are_unchanged() -> None:
    """str enums serialize as their value: scripts reading --json see the same strings."""
    assert json.dumps([QueryLevel.IMAGE, OnConflict.REPLACE, IngestStatus.QUARANTINED,
                       Problem.HASH_MISMATCH, AuditEvent.STORE, SettingKey.AE_TITLE]) == \
        '["IMAGE", "replace", "quarantined", "hash_mismatch", "store", "ae_title"]'
    assert json.loads(json.dumps(IngestResult(IngestStatus.STORED, "x").as_dict()))["status"] == "stored"
    assert Finding("p", Problem.MISSING).as_dict()["problem"] == "missing"
    assert f"{QueryLevel.SERIES}" == "SERIES"
    assert LEVELS == ("PATIENT", "STUDY", "SERIES", "IMAGE")
    assert level_from_name("instance") is QueryLevel.IMAGE


def test_the_node_audits_only_known_events() -> None:
    """net/ cannot import the archive's enum: its literal event names must be members of it."""
    source = (REPO_ROOT / "pacsctl" / "net" / "scp.py").read_text(encoding="utf-8")
    used = set(re.findall(r'self\.audit\(\s*"(\w+)"', source))
    assert used and used <= {e.value for e in AuditEvent}
