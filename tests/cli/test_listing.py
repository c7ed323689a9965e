"""`pacsctl ls` (and `query`, which shares its output) for people and for cron (issue 10 item 22):
a table that fits the terminal, tab-separated text when stdout is not a terminal, --wide,
--sort, --limit, --columns, and `-k Modality=MR` at study level meaning ModalitiesInStudy."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from rich.cells import cell_len
from typer.testing import CliRunner

from pacsctl.archive.archive import Archive
from pacsctl.cli.app import app
from pacsctl.net.types import ScpOptions
from pacsctl.node.service import serve
from tests.helpers import cli_env

NARROW = {"COLUMNS": "80", "TTY_COMPATIBLE": "1", "NO_COLOR": "1"}  # rich: a terminal, 80 wide
BOX = set("─│┃━┏┓┗┛┡┩╇╈┼")
ANSI = re.compile(r"\x1b\[[0-9;]*m")  # bold headers (NO_COLOR keeps styles other than colour)


def visible_lines(text: str) -> list[str]:
    return [ANSI.sub("", line) for line in text.splitlines()]


def invoke(*args: str | Path, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env or {"NO_COLOR": "1"})


def ndjson(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def studies(archive_dir: Path, ct_factory, tmp_path: Path) -> dict[str, str]:
    """Three studies with long names and descriptions: MR (+SR), CT, CT; returns their UIDs."""
    uids = {"mr": generate_uid(), "ct1": generate_uid(), "ct2": generate_uid()}
    common = dict(patient_name="VERYLONGFAMILYNAME^GIVENNAME^MIDDLENAME",
                  study_description="CT CHEST ABDOMEN PELVIS WITH CONTRAST, FOLLOW-UP")
    for modality in ("MR", "SR"):
        ct_factory(patient_id="P1", study_uid=uids["mr"], study_date="20240301",
                   extra={"Modality": modality}, **common)
    ct_factory(patient_id="P2", study_uid=uids["ct1"], study_date="20240101", **common)
    ct_factory(patient_id="P3", study_uid=uids["ct2"], study_date="20240201", **common)
    result = invoke("import", "--jobs", "1", tmp_path / "ct")
    assert result.exit_code == 0, result.stderr
    return uids


def test_not_a_terminal_gives_tab_separated_lines_with_a_header(studies):
    result = invoke("ls")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split("\t") == [
        "PatientID", "PatientName", "StudyDate", "AccessionNumber", "StudyDescription", "ModalitiesInStudy",
        "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "StudyInstanceUID"]
    assert len(lines) == 4 and not BOX & set(result.stdout)
    rows = [line.split("\t") for line in lines[1:]]
    assert {row[-1] for row in rows} == set(studies.values())  # UIDs whole
    assert all(len(row) == 9 for row in rows)
    assert any(row[5] == "MR\\SR" for row in rows)


def test_table_fits_80_columns_with_uids_shortened_in_the_middle(studies):
    result = invoke("ls", env=NARROW)
    assert result.exit_code == 0, result.stderr
    lines = visible_lines(result.stdout)
    assert lines and all(cell_len(line) <= 80 for line in lines), result.stdout
    header = lines[0].split()
    assert "PatientID" in header and "StudyInstanceUID" in header and "Date" in header
    body = "\n".join(lines[2:])
    for uid in studies.values():
        assert uid not in body
        assert any(uid[:6] in line and uid[-6:] in line and "…" in line for line in lines[2:])
    assert "P1" in body and "20240301" in body  # IDs and dates whole
    assert "left out to fit the terminal" in result.stderr and "--wide" in result.stderr


def test_wide_shows_every_column_and_whole_uids(studies):
    result = invoke("ls", "--wide", env=NARROW)
    assert result.exit_code == 0, result.stderr
    for uid in studies.values():
        assert uid in result.stdout
    assert "VERYLONGFAMILYNAME^GIVENNAME^MIDDLENAME" in result.stdout
    assert "Accession" in visible_lines(result.stdout)[0] and "left out" not in result.stderr


def test_sort_limit_and_columns(studies):
    result = invoke("ls", "--sort=-StudyDate", "--limit", "2", "--columns", "studydate,StudyInstanceUID")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["StudyDate\tStudyInstanceUID", f"20240301\t{studies['mr']}",
                                          f"20240201\t{studies['ct2']}"]
    assert "2 of 3" in result.stderr
    ascending = invoke("ls", "--sort", "StudyDate", "--json", "--columns", "StudyDate,PatientID")
    assert ndjson(ascending.stdout) == [{"StudyDate": "20240101", "PatientID": "P2"},
                                        {"StudyDate": "20240201", "PatientID": "P3"},
                                        {"StudyDate": "20240301", "PatientID": "P1"}]
    by_patient = invoke("ls", "--level", "instance", "--sort", "size,-SOPInstanceUID", "--columns", "size")
    assert by_patient.exit_code == 0 and by_patient.stdout.splitlines()[0] == "size"
    bad = invoke("ls", "--columns", "StudyDat")
    assert bad.exit_code == 2 and "StudyDate" in bad.stderr  # did you mean


def test_study_level_modality_means_modalities_in_study(studies):
    mr = ndjson(invoke("ls", "-k", "Modality=MR", "--json").stdout)
    assert [s["StudyInstanceUID"] for s in mr] == [studies["mr"]]
    ct = ndjson(invoke("ls", "-k", "modality=CT", "--json").stdout)
    assert {s["StudyInstanceUID"] for s in ct} == {studies["ct1"], studies["ct2"]}
    both = ndjson(invoke("ls", "-k", "Modality=SR", "-k", "ModalitiesInStudy=MR", "--json").stdout)
    assert [s["StudyInstanceUID"] for s in both] == [studies["mr"]]
    series = ndjson(invoke("ls", "--level", "series", "-k", "Modality=MR", "--json").stdout)
    assert [s["Modality"] for s in series] == ["MR"]


def _run_in_pty(args: list[str], columns: int) -> str:
    """`python -m pacsctl ARGS` with stdout on a real pseudo-terminal `columns` wide."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = cli_env({"NO_COLOR": "1"})
    for var in ("COLUMNS", "LINES", "TTY_COMPATIBLE", "FORCE_COLOR"):
        env.pop(var, None)
    proc = subprocess.Popen([sys.executable, "-m", "pacsctl", *args], stdout=slave,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_real_terminal_and_real_pipe(studies, archive_dir):
    text = _run_in_pty(["--archive", str(archive_dir), "ls"], 80)
    lines = [line for line in visible_lines(text) if line.strip()]
    assert len(lines) == 5 and all(cell_len(line) <= 80 for line in lines), text
    assert "…" in text and "\t" not in text
    piped = subprocess.run([sys.executable, "-m", "pacsctl", "--archive", str(archive_dir), "ls"],
                           capture_output=True, text=True, env=cli_env(), timeout=120)
    assert piped.returncode == 0 and piped.stdout.splitlines()[0].startswith("PatientID\tPatientName\t")
    assert not BOX & set(piped.stdout)


def test_query_shares_the_view_options(studies, archive_dir):
    archive = Archive.open(archive_dir)
    node = serve(archive, ScpOptions(ae_title="PEER", host="127.0.0.1", port=0, temp_dir=archive.tmp_dir))
    try:
        result = invoke("query", f"PEER@127.0.0.1:{node.port}", "--sort=-StudyDate", "--limit", "1",
                        "--columns", "StudyDate,StudyInstanceUID")
    finally:
        node.stop(graceful=False, timeout=10)
        archive.close()
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["StudyDate\tStudyInstanceUID", f"20240301\t{studies['mr']}"]


def test_fit_widths_and_shorten_middle():
    from pacsctl.cli.tables import ColumnKind, fit_widths, shorten_middle

    kinds = [ColumnKind.UID, ColumnKind.TEXT, ColumnKind.FIXED]
    assert fit_widths([64, 30, 8], [16, 10, 8], kinds, 100) == [62, 30, 8]
    assert fit_widths([64, 30, 8], [16, 10, 8], kinds, 40) == [16, 16, 8]
    assert fit_widths([64, 30, 8], [16, 10, 8], kinds, 10) == [16, 10, 8]  # never below minimums
    assert shorten_middle("1.2.840.113619.2.55.3", 9) == "1.2.…55.3"
    assert shorten_middle("1.2.3", 9) == "1.2.3"
