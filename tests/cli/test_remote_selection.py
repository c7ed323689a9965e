"""What `send`, `move` and `get` select (issue 11, "the remote commands, completed"): `send --all`,
`--study UID` on all three, `send NODE -` reading paths or `ls --json` records from stdin, and
zip files read by `send` as `import` reads them.

Real pynetdicom peers on loopback (`peer_factory`: a pacsctl node over its own archive); the
CLI runs in-process (`invoke_cli`), stdin given as text.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.uid import generate_uid

from tests.cli.test_remote import Peer, peer_factory  # noqa: F401  (fixture)
from tests.helpers import invoke_cli


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _summary(proc: Any) -> dict[str, Any]:
    records = _lines(proc.stdout)
    assert records and records[-1]["type"] == "summary", proc.stdout + proc.stderr
    return records[-1]


def _uids(files: list[Path]) -> set[str]:
    return {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}


def _two_studies(ct_factory: Any) -> tuple[str, list[Path], list[Path]]:
    study = generate_uid()
    first = ct_factory.series(3, study_uid=study, patient_id="P1")
    second = ct_factory.series(2, patient_id="P2")
    assert invoke_cli("import", "--jobs", "1", ct_factory.directory).returncode == 0
    return study, first, second


def test_send_all_sends_the_whole_archive(peer_factory: Callable[..., Peer], ct_factory: Any,  # noqa: F811
                                          archive_dir: Path) -> None:
    empty = invoke_cli("import", "--jobs", "1", archive_dir.parent / "nothing-here")
    assert empty.returncode == 2  # (no archive yet: the path does not exist)
    invoke_cli("config", "set", "ae_title", "LOCAL")
    peer = peer_factory()
    nothing = invoke_cli("send", peer.spec, "--all", "--json")
    assert nothing.returncode == 2 and "holds no instance" in nothing.stderr
    _, first, second = _two_studies(ct_factory)
    proc = invoke_cli("send", peer.spec, "--all", "--json")
    assert proc.returncode == 0, proc.stderr
    assert (_summary(proc)["sent"], _summary(proc)["failed"]) == (5, 0)
    assert peer.instance_uids() == _uids(first + second)
    both = invoke_cli("send", peer.spec, "--all", "-k", "PatientID=P1")
    assert both.returncode == 2 and "--all" in both.stderr


def test_send_reads_ls_json_records_and_paths_from_stdin(
        peer_factory: Callable[..., Peer], ct_factory: Any, tmp_path: Path,  # noqa: F811
        archive_dir: Path) -> None:
    """`pacsctl ls --json ... | pacsctl send NODE -` at instance and at study level, and plain
    paths, one per line; summary records are ignored, unknown instance UIDs fail alone."""
    study, first, second = _two_studies(ct_factory)
    instances = invoke_cli("ls", "--level", "instance", "-k", "PatientID=P1", "--json").stdout
    assert len(_lines(instances)) == 3 and all("path" in r for r in _lines(instances))
    peer = peer_factory()
    proc = invoke_cli("send", peer.spec, "-", "--json", input=instances)
    assert proc.returncode == 0, proc.stderr
    assert _summary(proc)["sent"] == 3 and peer.instance_uids() == _uids(first)

    studies = invoke_cli("ls", "-k", "PatientID=P2", "--json").stdout  # study level
    other = peer_factory(aet="OTHER")
    by_study = invoke_cli("send", other.spec, "-", "--json", input=studies)
    assert by_study.returncode == 0, by_study.stderr
    assert other.instance_uids() == _uids(second)

    loose = ct_factory(directory=tmp_path / "loose")
    lines = (f"{loose}\n\n" + json.dumps({"SOPInstanceUID": "1.2.3.999"}) + "\n"
             + json.dumps({"type": "summary", "files": 9}) + "\n")
    third = peer_factory(aet="THIRD")
    mixed = invoke_cli("send", third.spec, "-", "--json", input=lines)
    assert mixed.returncode == 3, mixed.stderr
    records = _lines(mixed.stdout)
    assert [(r["path"], r["reason"]) for r in records[:-1]] == [("1.2.3.999", "not in the archive")]
    assert (records[-1]["sent"], records[-1]["failed"]) == (1, 1)
    assert third.instance_uids() == _uids([loose])
    assert invoke_cli("send", third.spec, "-", input="\n").returncode == 2


def test_send_reads_zip_files_as_import_does(peer_factory: Callable[..., Peer], ct_factory: Any,  # noqa: F811
                                             tmp_path: Path, archive_dir: Path) -> None:
    """Members of a zip (and of a zip inside it) are sent; junk in it is skipped, not failed;
    reports name the member as `import` does (zip!member); no copy is left behind."""
    files = ct_factory.series(3, directory=tmp_path / "src")
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        zf.write(files[2], "deep/IM3")
    outer = tmp_path / "cd.zip"
    with zipfile.ZipFile(outer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.write(files[0], "DICOM/IM1")
        zf.write(files[1], "DICOM/IM2.dcm")
        zf.write(inner, "more/inner.zip")
        zf.writestr("README.TXT", "viewer inside")
    peer = peer_factory()
    proc = invoke_cli("send", peer.spec, outer, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = _summary(proc)
    assert (summary["files"], summary["sent"], summary["skipped"], summary["failed"]) == (4, 3, 1, 0)
    assert [r["path"] for r in _lines(proc.stdout)[:-1]] == [f"{outer}!README.TXT"]
    assert peer.instance_uids() == _uids(files)
    from pacsctl.remote.send import collect_files, spilled_inputs

    with spilled_inputs() as spill:
        items = collect_files([outer], spill)
        assert sum(1 for _ in spill.iterdir()) == 3  # the DICOM members, not the README
        assert {i.name for i in items if not i.skip} == {
            f"{outer}!DICOM/IM1", f"{outer}!DICOM/IM2.dcm", f"{outer}!more/inner.zip!deep/IM3"}
    assert not spill.exists()


def test_move_and_get_take_study(peer_factory: Callable[..., Peer], ct_factory: Any,  # noqa: F811
                                 archive_dir: Path) -> None:
    study = generate_uid()
    wanted = ct_factory.series(3, study_uid=study, patient_id="P1")
    ct_factory.series(2, patient_id="P1")  # the same patient's other study stays
    source = peer_factory(sorted(ct_factory.directory.rglob("*.dcm")), aet="SOURCE")
    got = invoke_cli("get", source.spec, "--study", study, "--json")
    assert got.returncode == 0, got.stderr
    assert (_summary(got)["matched"], _summary(got)["stored"]) == (1, 3)
    listed = _lines(invoke_cli("ls", "--json").stdout)
    assert [r["StudyInstanceUID"] for r in listed] == [study]

    target = peer_factory(aet="TARGET")
    source.add_destination("target", "TARGET", target.node.port)
    moved = invoke_cli("move", source.spec, "--to", "TARGET", "--study", study, "--json")
    assert moved.returncode == 0, moved.stderr
    assert _summary(moved)["completed"] == 3 and target.instance_uids() == _uids(wanted)
    both = invoke_cli("move", source.spec, "--to", "TARGET", "--study", study, "-k", f"StudyInstanceUID={study}")
    assert both.returncode == 2


# -- audit records of move/get into the archive, and of failed send/move/get -------------------


def _audit(archive_dir: Path) -> list[dict[str, Any]]:
    return _lines((archive_dir / "audit.log").read_text())


def test_get_and_move_into_the_archive_write_audit_records_like_serve(
        peer_factory: Callable[..., Peer], ct_factory: Any, archive_dir: Path) -> None:  # noqa: F811
    from tests.helpers import free_port

    files = ct_factory.series(2, patient_id="P1")
    source = peer_factory(files, aet="SOURCE")
    got = invoke_cli("get", source.spec, "-k", "PatientID=P1", "--json")
    assert got.returncode == 0, got.stderr
    stores = [r for r in _audit(archive_dir) if r["event"] == "store"]
    assert {r["SOPInstanceUID"] for r in stores} == _uids(files)
    assert all(r["status"] == "0x0000" and r["calling_aet"] == "SOURCE" for r in stores)
    assert all("PatientID" not in r and "PatientName" not in r for r in _audit(archive_dir))

    port = free_port()
    for key, value in (("ae_title", "LOCAL"), ("port", str(port)), ("host", "127.0.0.1")):
        assert invoke_cli("config", "set", key, value).returncode == 0
    source.add_destination("local", "LOCAL", port)
    (archive_dir / "audit.log").unlink()
    moved = invoke_cli("move", source.spec, "--to", "LOCAL", "-k", "PatientID=P1", "--json")
    assert moved.returncode == 0, moved.stderr
    events = [(r["event"], r.get("calling_aet")) for r in _audit(archive_dir)]
    assert ("associate", "SOURCE") in events and ("release", "SOURCE") in events
    assert events.count(("store", "SOURCE")) == 2  # duplicates now: stored again as serve would say
    assert events[-1] == ("retrieve", "LOCAL")


def test_failed_send_move_and_get_are_audited(ct_factory: Any, archive_dir: Path) -> None:
    from tests.helpers import free_port

    assert invoke_cli("config", "set", "ae_title", "LOCAL").returncode == 0
    nobody = f"NOBODY@127.0.0.1:{free_port()}"
    assert invoke_cli("send", nobody, ct_factory(), "--timeout", "5").returncode == 4
    assert invoke_cli("get", nobody, "--study", "1.2.3", "--timeout", "5").returncode == 4
    assert invoke_cli("move", nobody, "--to", "X", "-k", "PatientID=P1", "--timeout", "5").returncode == 4
    records = _audit(archive_dir)
    assert [(r["event"], r.get("service"), r["status"], r["failure"]) for r in records] == [
        ("send", None, "failed", "refused"),
        ("retrieve", "get", "failed", "refused"),
        ("retrieve", "move", "failed", "refused"),
    ]
    assert all("refused the connection" in r["error"] for r in records)
    assert records[1]["uids"] == ["1.2.3"] and "P1" not in json.dumps(records[2])
