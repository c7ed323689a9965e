"""Finding inputs: DICOMDIR media with mangled names, zips, links and odd files."""

from __future__ import annotations

import os
import shutil
import zipfile
from pathlib import Path

import pydicom
import pytest

from pacsctl.archive.archive import Archive
from pacsctl.ingest.importer import collect_sources, import_sources
from pacsctl.ingest.sources import Problem, Source, dicomdir_sources, find_sources, resolve_file_id

MEDIA_FOLDERS = ("77654033", "98892001", "98892003")


def referenced_ids(dicomdir: Path) -> list[list[str]]:
    ds = pydicom.dcmread(dicomdir)
    out = []
    for record in ds.DirectoryRecordSequence:
        if "ReferencedFileID" in record:
            value = record.ReferencedFileID
            out.append([value] if isinstance(value, str) else list(value))
    return out


def mangle(path: Path, how: int) -> Path:
    """Rename a file as mounts and copy tools do: lower case, added extension, ISO `;1`."""
    name = path.name
    new = [name.lower(), name + ".dcm", name.lower() + ".DCM", name + ";1", name][how % 5]
    target = path.with_name(new)
    path.rename(target)
    return target


@pytest.fixture
def mangled_media(tmp_path: Path, testdata_dir: Path, ct_factory) -> tuple[Path, dict[str, Path]]:
    """pydicom's DICOMDIR tree, copied, with folders in lower case and file names mangled,
    plus files the DICOMDIR does not reference (a stray DICOM file, a viewer, autorun.inf).
    Returns the DICOMDIR path and {referenced file ID: mangled path}."""
    source = testdata_dir / "dicomdirtests"
    media = tmp_path / "cdrom"
    media.mkdir()
    shutil.copy(source / "DICOMDIR", media / "dicomdir")  # the DICOMDIR's own name, lower case
    for folder in MEDIA_FOLDERS:
        shutil.copytree(source / folder, media / folder)
    where: dict[str, Path] = {}
    for n, parts in enumerate(referenced_ids(source / "DICOMDIR")):
        where["/".join(parts)] = mangle(media.joinpath(*parts), n)
    for sub in sorted((p for p in media.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        lowered = sub.with_name(sub.name.lower())
        if lowered != sub:
            sub.rename(lowered)
    for key, path in where.items():  # follow the folder renames
        rel = path.relative_to(media)
        where[key] = media.joinpath(*[p.lower() for p in rel.parts[:-1]], rel.parts[-1])
        assert where[key].is_file()
    ct_factory("stray.dcm", directory=media / "77654033" / "cr1")  # on the media, not in the DICOMDIR
    (media / "autorun.inf").write_text("[autorun]\nopen=viewer.exe\n")
    (media / "viewer.exe").write_bytes(b"MZ" + b"\x00" * 300)
    return media / "dicomdir", where


def test_dicomdir_resolves_mangled_names_exactly(mangled_media) -> None:
    dicomdir, where = mangled_media
    found = list(dicomdir_sources(dicomdir))
    assert all(isinstance(s, Source) for s in found), [s for s in found if isinstance(s, Problem)]
    assert sorted(s.path for s in found) == sorted(str(p) for p in where.values())


def test_import_of_mangled_media_imports_exactly_the_referenced_files(mangled_media, archive_dir: Path) -> None:
    dicomdir, where = mangled_media
    expected = {str(pydicom.dcmread(p).SOPInstanceUID) for p in where.values()}
    results = []
    with Archive.open(archive_dir) as archive:
        summary = import_sources(archive, collect_sources([str(dicomdir)]), on_result=results.append)
        assert summary.files == len(where) and summary.skipped == 0 and summary.quarantined == 0
        assert summary.imported + summary.duplicates == len(where)
        assert {r["SOPInstanceUID"] for r in archive.index.instances()} == expected
    assert not any("stray" in r.origin or "viewer" in r.origin for r in results)


def test_missing_referenced_file_is_reported(mangled_media, archive_dir: Path) -> None:
    dicomdir, where = mangled_media
    gone_id, gone = sorted(where.items())[0]
    gone.unlink()
    sources = collect_sources([str(dicomdir)])
    problems = [s for s in sources if isinstance(s, Problem)]
    assert len(problems) == 1 and problems[0].missing
    assert problems[0].origin.lower().endswith(gone_id.lower().split("/")[-1])
    with Archive.open(archive_dir) as archive:
        summary = import_sources(archive, sources)
    assert summary.missing == 1 and summary.skipped == 1
    assert summary.files == len(where)


def test_tiny_alpha_media(tmp_path: Path, testdata_dir: Path, archive_dir: Path) -> None:
    media = tmp_path / "tiny"
    shutil.copytree(testdata_dir / "dicomdirtests" / "TINY_ALPHA", media)
    ids = referenced_ids(media / "DICOMDIR")
    for n, parts in enumerate(ids):
        mangle(media.joinpath(*parts), n)
    with Archive.open(archive_dir) as archive:
        summary = import_sources(archive, collect_sources([str(media / "DICOMDIR")]))
    assert summary.files == len(ids) == 50
    assert summary.skipped == 0 and summary.quarantined == 0


def test_resolve_file_id_prefers_exact_match(tmp_path: Path) -> None:
    (tmp_path / "IM1").write_bytes(b"a")
    (tmp_path / "im1.dcm").write_bytes(b"b")
    assert resolve_file_id(tmp_path, ["IM1"]) == tmp_path / "IM1"
    (tmp_path / "IM1").unlink()
    assert resolve_file_id(tmp_path, ["IM1"]) == tmp_path / "im1.dcm"
    assert resolve_file_id(tmp_path, ["IM2"]) is None
    assert resolve_file_id(tmp_path, ["NODIR", "IM1"]) is None


def test_walk_survives_loops_links_fifos(tmp_path: Path, ct_factory) -> None:
    tree = tmp_path / "tree"
    ct_factory("a.dcm", directory=tree / "x")
    (tree / "x" / "loop").symlink_to("..")  # a loop back up the tree
    (tree / "self").symlink_to(".")
    (tree / "dangling").symlink_to(tree / "nowhere")
    os.mkfifo(tree / "pipe")
    sources = list(find_sources([str(tree), str(tmp_path / "absent")]))
    files = [s for s in sources if isinstance(s, Source)]
    problems = {Path(p.origin).name: p.reason for p in sources if isinstance(p, Problem)}
    assert [Path(s.path).name for s in files] == ["a.dcm"]
    assert set(problems) == {"dangling", "pipe", "absent"}
    assert "broken" in problems["dangling"] and "not a regular file" in problems["pipe"]


def test_zip_members_are_read_in_place(tmp_path: Path, ct_factory) -> None:
    cts = ct_factory.series(3)
    zpath = tmp_path / "study.zip"
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in cts:
            zf.write(p, f"DICOM/{p.name}")
        zf.writestr("README.txt", "hello")
        zf.writestr("DICOM/", "")
    sources = collect_sources([str(zpath)])
    assert [s.member for s in sources] == ["DICOM/" + p.name for p in cts] + ["README.txt"]
    assert sources[0].read() == cts[0].read_bytes()
    assert sources[0].origin == f"{zpath}!DICOM/{cts[0].name}"
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04" + b"\x00" * 50)  # zip magic, nothing else
    [problem] = collect_sources([str(bad)])
    assert isinstance(problem, Problem) and "zip" in problem.reason
