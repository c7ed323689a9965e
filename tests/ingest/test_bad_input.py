"""Bad input does not exit 0: damaged zips are exit 3, `DICOMDIR;1` is media, zips in zips are
read, and `send --study` of a study the archive does not hold is an error."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

from tests.helpers import run_cli


def _run(archive: Path, *args: object):
    return run_cli("--archive", archive, *map(str, args))


def _ndjson(stdout: str) -> tuple[list[dict], dict]:
    lines = [json.loads(line) for line in stdout.splitlines()]
    return lines[:-1], lines[-1]


def test_a_truncated_zip_is_exit_3_with_its_reason(tmp_path: Path, ct_factory) -> None:
    whole = tmp_path / "study.zip"
    with zipfile.ZipFile(whole, "w") as zf:
        for p in ct_factory.series(3):
            zf.write(p, p.name)
    cut = tmp_path / "cut" / "study.zip"
    cut.parent.mkdir()
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])  # no central directory
    out = _run(tmp_path / "archive", "import", cut, "--json")
    assert out.returncode == 3, out.stderr
    [record], summary = _ndjson(out.stdout)
    assert record["status"] == "skipped" and record["reason"].startswith("unreadable zip file")
    assert (summary["skipped"], summary["unreadable"]) == (1, 1)
    human = _run(tmp_path / "archive", "import", cut)
    assert human.returncode == 3 and "1 could not be read" in human.stderr
    assert f"skipped: {cut}: unreadable zip file" in human.stderr  # said without -v


def test_plain_junk_is_still_exit_0(tmp_path: Path, ct_factory) -> None:
    ct_factory()
    (ct_factory.directory / "autorun.inf").write_text("[autorun]\n")
    out = _run(tmp_path / "archive", "import", ct_factory.directory, "--json")
    assert out.returncode == 0, out.stderr
    assert _ndjson(out.stdout)[1]["unreadable"] == 0


def test_dicomdir_with_its_iso_version_suffix_is_read_as_media(tmp_path: Path, testdata_dir: Path) -> None:
    for n, name in enumerate(["DICOMDIR;1", "dicomdir;1", "DICOMDIR."]):
        media = tmp_path / f"cd{n}"
        shutil.copytree(testdata_dir / "dicomdirtests" / "TINY_ALPHA", media)
        (media / "DICOMDIR").rename(media / name)
        out = _run(tmp_path / f"archive{n}", "import", media / name, "--json")
        assert out.returncode == 0, out.stderr
        summary = _ndjson(out.stdout)[1]
        assert (summary["imported"], summary["skipped"], summary["files"]) == (50, 0, 50), (name, summary)


def test_a_zip_inside_a_zip_is_read(tmp_path: Path, ct_factory) -> None:
    cts = ct_factory.series(4)
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(cts[0], "IMG/one.dcm")
        zf.write(cts[1], "IMG/two.dcm")
    innermost = io.BytesIO()
    with zipfile.ZipFile(innermost, "w") as zf:
        zf.write(cts[2], "three.dcm")
    middle = io.BytesIO()
    with zipfile.ZipFile(middle, "w") as zf:
        zf.writestr("deeper.zip", innermost.getvalue())
    outer = tmp_path / "in" / "outer.zip"
    outer.parent.mkdir()
    with zipfile.ZipFile(outer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("patient/inner.zip", inner.getvalue())
        zf.writestr("patient/middle.zip", middle.getvalue())
        zf.write(cts[3], "patient/four.dcm")
        zf.writestr("patient/broken.zip", inner.getvalue()[:100])  # zip magic, then cut
    out = _run(tmp_path / "archive", "import", outer, "--json")
    records, summary = _ndjson(out.stdout)
    assert (summary["imported"], summary["files"]) == (4, 5), out.stdout
    assert [r["path"] for r in records] == [f"{outer}!patient/broken.zip"]
    assert out.returncode == 3  # the damaged inner zip could not be read
    listed = _run(tmp_path / "archive", "ls", "--level", "instance", "--json")
    assert len(listed.stdout.splitlines()) == 4


def test_send_of_a_study_the_archive_does_not_hold_is_an_error(tmp_path: Path, ct_factory) -> None:
    archive = tmp_path / "archive"
    assert _run(archive, "import", ct_factory()).returncode == 0
    out = _run(archive, "send", "PACS@127.0.0.1:1", "--study", "1.2.3.4.5.6.7.8.9")
    assert out.returncode == 2, out.stderr
    assert out.stderr.splitlines()[0] == "error: no archived instance matches the selection (StudyInstanceUID)"
    secret = _run(archive, "send", "PACS@127.0.0.1:1", "-k", "PatientName=Geheim^Name")
    assert secret.returncode == 2 and "Geheim" not in secret.stderr  # values may identify a patient
