"""Crashes and a full disk: kill -9 at the worst moments, a real small file system.

Every experiment ends with the same check (`tests.storage.checks.consistency`): each file under
objects/ is complete and indexed exactly once with its true size and hash, and the index holds
nothing without a file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pydicom
import pytest

from benchmarks.corpus import make_ct
from pacsctl.archive.archive import Archive
from pacsctl.ingest.importer import collect_sources, import_sources
from pacsctl.errors import StorageFullError
from pacsctl.integrity.filecheck import is_leftover
from tests.helpers import run_cli
from tests.storage.checks import consistency, object_files, run_python


def ct_tree(root: Path, count: int, rows: int = 64, study: str = "1.2.826.0.1.3680043.8.498.77") -> list[Path]:
    """`count` CT files in two series of one study, named by instance."""
    return [
        make_ct(root / f"se{i % 2}" / f"IM{i:05d}.dcm", study_uid=study, series_uid=f"{study}.{i % 2}",
                sop_uid=f"{study}.{i % 2}.{i}", instance_number=i, rows=rows, cols=rows, pixel_seed=i)
        for i in range(count)
    ]


def reimport(archive_dir: Path, tree: Path, jobs: int = 1):
    with Archive.open(archive_dir) as archive:
        return import_sources(archive, collect_sources([str(tree)]), jobs=jobs)


KILL_AT = """
import os, signal, sys
from pathlib import Path
from pacsctl.archive.archive import Archive
from pacsctl.ingest.importer import collect_sources, import_sources
from pacsctl.ingest import importer
from pacsctl.storage import files, index
tree, root, where = sys.argv[1], sys.argv[2], sys.argv[3]
importer.BATCH_FILES = 16  # several batches: the kill lands after some were committed
calls = {"n": 0}
def die_on(module, name, after):
    original = getattr(module, name)
    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > after:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)
    setattr(module, name, wrapper)
if where == "before-journal":      # files published and their folders fsynced, index not yet told
    die_on(index.Index, "add", 1)
elif where == "mid-publish":       # some files of a batch have their names, others not
    die_on(files, "publish", 20)
elif where == "mid-stage":         # temp files written, syncing before any is published
    die_on(files, "barrier", 0)
elif where == "mid-fold":          # while the journal is being folded into the shards
    die_on(index._Shard, "payload", 3)
with Archive.open(root) as archive:
    import_sources(archive, collect_sources([tree]), jobs=1)
"""


def test_a_journal_line_that_outlived_its_files_name_never_counts(tmp_path: Path, archive_dir: Path) -> None:
    """A batch's journal lines and its files' names become durable in one sync. A power cut in
    it can keep a line whose file's name was lost (never acknowledged: the sender sends again).
    Such a line is neither listed nor folded, and verify finds nothing to repair."""
    ct_tree(tmp_path / "tree", 4)
    reimport(archive_dir, tmp_path / "tree")
    with Archive.open(archive_dir) as archive:
        kept = archive.index.instances()[0]
    lost_uid = kept["SOPInstanceUID"] + ".9"
    lost = dict(kept, SOPInstanceUID=lost_uid, path=Archive.object_relpath(lost_uid))
    # What the dead writer left: its journal (no lock: orphaned), one line without its file.
    journal = archive_dir / "index" / "journal" / "999999-dead.ndjson"
    journal.write_text(json.dumps(lost) + "\n" + json.dumps(kept) + "\n")
    with Archive.open(archive_dir) as archive:
        listed = {r["SOPInstanceUID"] for r in archive.index.instances()}
        assert kept["SOPInstanceUID"] in listed and lost_uid not in listed
        assert archive.index.flush() == 1  # the dead writer's journal, without the lost line
    assert not journal.exists()
    assert consistency(archive_dir) == []
    result = run_cli("--archive", str(archive_dir), "verify", "--json")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("where", ["before-journal", "mid-publish", "mid-stage", "mid-fold"])
def test_kill_9_at_the_worst_moment_then_rerun(where: str, tmp_path: Path, archive_dir: Path) -> None:
    files = ct_tree(tmp_path / "tree", 40)
    proc = run_python(KILL_AT, str(tmp_path / "tree"), str(archive_dir), where, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not any(p.suffix != ".dcm" for p in object_files(archive_dir).values())
    summary = reimport(archive_dir, tmp_path / "tree")
    assert summary.files == 40 and summary.quarantined == 0 and summary.skipped == 0
    assert summary.imported + summary.duplicates == 40
    assert len(object_files(archive_dir)) == 40
    assert consistency(archive_dir) == []
    for path in files:  # byte for byte
        sop = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        assert (archive_dir / Archive.object_relpath(sop)).read_bytes() == path.read_bytes()
    # leftovers of the killed process are temp files in tmp/ only, known as such (verify removes them)
    leftovers = sorted((archive_dir / "tmp").iterdir())
    assert all(p.suffix == ".part" for p in leftovers)
    assert sorted(p for p in (archive_dir / "tmp").iterdir() if is_leftover(p)) == leftovers


def test_kill_9_of_a_running_cli_import_then_rerun(tmp_path: Path, archive_dir: Path) -> None:
    """A real `pacsctl import --jobs 2` killed (the whole process group) at three moments."""
    tree = tmp_path / "tree"
    ct_tree(tree, 240, rows=256)
    from tests.helpers import cli_env
    import sys

    for attempt, wait_for in enumerate((5, 60, 150)):
        proc = subprocess.Popen([sys.executable, "-m", "pacsctl", "import", "--jobs", "2", "--json", str(tree)],
                                env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
        deadline = time.monotonic() + 60
        while len(object_files(archive_dir)) < wait_for and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert not [p for p in object_files(archive_dir) if not p.endswith(".dcm")]
    result = run_cli("import", "--json", "--jobs", "2", str(tree))
    assert result.returncode == 0, result.stderr
    summary = [__import__("json").loads(line) for line in result.stdout.splitlines()][-1]
    assert summary["files"] == 240 and summary["imported"] + summary["duplicates"] == 240
    assert len(object_files(archive_dir)) == 240
    assert consistency(archive_dir) == []


USABLE = 2 << 20  # what the small file system leaves free for the test


@pytest.fixture(params=["tmpfs", "ext4"])
def small_fs(request: pytest.FixtureRequest, tmp_path: Path):
    """A real file system with 2 MiB free, unmounted afterwards: tmpfs (ENOSPC at write), and a
    loop-mounted ext4 image (journaled, delayed allocation, 1 KiB blocks), as disks really are.
    A ballast file takes the rest of the room; `grow()` deletes it (resizing a mounted file
    system is not permitted in every container)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    if request.param == "tmpfs":
        cmd = ["mount", "-t", "tmpfs", "-o", "size=6m,mode=0700", "tmpfs", str(mnt)]
    else:
        image = tmp_path / "ext4.img"
        subprocess.run(["truncate", "-s", "7M", str(image)], check=True)
        made = subprocess.run(["mkfs.ext4", "-q", "-F", "-b", "1024", "-N", "4096", str(image)], capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"mkfs.ext4 failed: {made.stderr.decode().strip()}")
        cmd = ["mount", "-o", "loop", str(image), str(mnt)]
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount {request.param}: {done.stderr.decode().strip()}")
    mnt.chmod(0o700)
    try:
        st = os.statvfs(mnt)
        ballast = st.f_bavail * st.f_frsize - USABLE
        assert ballast > USABLE, "the small file system is too small for its ballast"
        fd = os.open(mnt / "ballast", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.write(fd, b"\1" * ballast)  # real blocks (not a sparse file), synced
            os.fsync(fd)
        finally:
            os.close(fd)
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def grow(mnt: Path) -> None:
    """Give the small file system more room, as an admin would: here, delete the ballast."""
    (mnt / "ballast").unlink()


def test_full_disk_core_reports_and_stays_consistent(small_fs: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    ct_tree(tree, 120, rows=64)  # ~9 kB each: ~1 MiB... plus a second larger batch below
    big = ct_tree(tmp_path / "big", 40, rows=160, study="1.2.826.0.1.3680043.8.498.78")  # ~52 kB each: 2 MiB
    archive_dir = small_fs / "archive"
    with Archive.open(archive_dir) as archive:
        summary = import_sources(archive, collect_sources([str(tree)]))
        assert summary.imported == 120
        with pytest.raises(StorageFullError) as info:
            import_sources(archive, collect_sources([str(tmp_path / "big")]))
        assert "full" in str(info.value)
    assert list((archive_dir / "tmp").iterdir()) == []
    assert consistency(archive_dir) == []
    stored = object_files(archive_dir)
    assert 120 <= len(stored) < 160
    by_name = {p.name: p for p in big}
    for path in stored.values():
        pydicom.dcmread(path)  # complete, parseable
    # make room and re-run: completes, nothing duplicated
    grow(small_fs)
    again = reimport(archive_dir, tmp_path / "big")
    assert again.imported + again.duplicates == 40 and again.quarantined == 0
    assert len(object_files(archive_dir)) == 160
    assert consistency(archive_dir) == []
    assert by_name


def test_full_disk_cli_says_so_with_exit_code(small_fs: Path, tmp_path: Path) -> None:
    ct_tree(tmp_path / "big", 60, rows=160)
    archive_dir = small_fs / "archive"
    result = run_cli("--archive", str(archive_dir), "import", "--jobs", "2", str(tmp_path / "big"))
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert "error:" in result.stderr and "full" in result.stderr
    assert "Traceback" not in result.stderr
    assert consistency(archive_dir) == []
    assert list((archive_dir / "tmp").iterdir()) == []


def fill(mnt: Path) -> Path:
    """Take every free byte of the file system at `mnt` with one file; return it."""
    filler = mnt / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_completely_full_disk_cli_import_of_new_and_broken_files(small_fs: Path, tmp_path: Path) -> None:
    """No byte left at all: staging, quarantining and journaling all fail; one clear error."""
    archive_dir = small_fs / "archive"
    first = ct_tree(tmp_path / "first", 10)
    with Archive.open(archive_dir) as archive:
        import_sources(archive, collect_sources([str(tmp_path / "first")]))
    filler = fill(small_fs)
    ct_tree(tmp_path / "second", 5, study="1.2.826.0.1.3680043.8.498.79")
    (tmp_path / "broken.dcm").write_bytes(first[0].read_bytes()[:3000])
    for args in ([str(tmp_path / "second")], [str(tmp_path / "broken.dcm")], [str(tmp_path / "first")]):
        result = run_cli("--archive", str(archive_dir), "import", "--jobs", "1", *args)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert "error:" in result.stderr and "full" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert consistency(archive_dir) == []
    filler.unlink()
    result = run_cli("--archive", str(archive_dir), "import", "--json", str(tmp_path / "first"), str(tmp_path / "second"))
    assert result.returncode == 0, result.stderr
    assert len(object_files(archive_dir)) == 15
    assert consistency(archive_dir) == []


def test_ctrl_c_stops_cleanly_with_130_then_rerun_completes(tmp_path: Path, archive_dir: Path) -> None:
    """SIGINT to the whole process group, as a terminal sends it: exit 130, nothing half-done,
    the index folded (no journal left), and a re-run completes."""
    import json
    import sys

    from tests.helpers import cli_env

    tree = tmp_path / "tree"
    ct_tree(tree, 200, rows=256)
    proc = subprocess.Popen([sys.executable, "-m", "pacsctl", "import", "--jobs", "2", "--json", str(tree)],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while len(object_files(archive_dir)) < 40 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the import finished before the interrupt landed")
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert list((archive_dir / "index" / "journal").glob("*.ndjson")) == []
    assert list((archive_dir / "tmp").iterdir()) == []
    assert consistency(archive_dir) == []
    done = len(object_files(archive_dir))
    assert 40 <= done <= 200  # the interrupt may land after the last batch committed
    result = run_cli("import", "--json", str(tree))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert (summary["imported"], summary["duplicates"]) == (200 - done, done)
    assert consistency(archive_dir) == []


def test_a_worker_killed_mid_import_gives_a_clear_error_and_rerun_completes(tmp_path: Path, archive_dir: Path) -> None:
    """The OOM killer (here: kill -9) takes one worker of `import --jobs 2`: one clear error
    line, exit 1, and the re-run completes with nothing duplicated."""
    import json
    import sys

    from tests.helpers import cli_env

    tree = tmp_path / "tree"
    ct_tree(tree, 240, rows=256)
    proc = subprocess.Popen([sys.executable, "-m", "pacsctl", "import", "--jobs", "2", "--json", str(tree)],
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while len(object_files(archive_dir)) < 30 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    if proc.poll() is not None or not workers:
        pytest.skip("the import finished before a worker could be killed")
    os.kill(int(workers[0]), signal.SIGKILL)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert "error: a worker process died" in err and "internal error" not in err
    result = run_cli("import", "--json", str(tree))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["imported"] + summary["duplicates"] == 240
    assert len(object_files(archive_dir)) == 240
    assert consistency(archive_dir) == []


def test_read_only_archive_lists_but_refuses_writes_clearly(tmp_path: Path, ct_factory) -> None:
    """An archive on read-only media (a backup disk, a snapshot): `ls` works, `import` says why not."""
    import json

    if os.geteuid() != 0:
        pytest.skip("bind-mounting read-only needs root")
    archive = tmp_path / "archive"
    ct_factory.series(3, patient_id="RO1")
    assert run_cli("--archive", str(archive), "import", str(tmp_path / "ct")).returncode == 0
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "--bind", str(archive), str(mnt)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only")
        listed = run_cli("--archive", str(mnt), "ls", "--json", "-k", "PatientID=RO1")
        assert listed.returncode == 0, listed.stderr
        [study] = [json.loads(line) for line in listed.stdout.splitlines()]
        assert study["NumberOfStudyRelatedInstances"] == 3
        more = tmp_path / "more"
        ct_factory.series(2, directory=more)
        for jobs in ("1", "2"):
            refused = run_cli("--archive", str(mnt), "import", "--jobs", jobs, str(more))
            assert refused.returncode == 1
            assert "error: cannot write to the archive" in refused.stderr and "internal error" not in refused.stderr
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    assert consistency(archive) == []


def test_full_disk_serve_answers_a700_keeps_serving_and_stores_once_room_is_made(small_fs: Path, tmp_path: Path) -> None:
    """A node whose disk fills up answers 0xA700 (out of resources) to each C-STORE, whether
    the disk fills while the data set streams in or at the commit, keeps its associations and
    its port, leaves nothing half-written, and stores again once there is room."""
    from pacsctl.config import Node
    from pacsctl.node.service import options_from_config, serve
    from pacsctl.net import scu

    small = ct_tree(tmp_path / "small", 6, rows=64)  # ~9 kB each
    archive_dir = small_fs / "archive"
    archive = Archive.open(archive_dir)
    node = serve(archive, options_from_config(archive, host="127.0.0.1", port=0))
    try:
        target = Node("n", "PACSCTL", "127.0.0.1", node.port)
        assert [r.status for r in scu.store(target, small[:2])] == [0, 0]
        filler = fill(small_fs)
        statuses = [r.status for r in scu.store(target, small[2:4])]
        assert statuses == [0xA700, 0xA700]
        filler.unlink()
        assert [r.status for r in scu.store(target, small[2:])] == [0, 0, 0, 0]
    finally:
        node.stop()
        archive.close()
    assert [p for p in (archive_dir / "tmp").iterdir() if not p.name.startswith(".")] == []
    assert list((archive_dir / "tmp").glob(".incoming-*")) == []
    assert len(object_files(archive_dir)) == 6
    assert consistency(archive_dir) == []
