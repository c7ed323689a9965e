"""The durable file store: staged temp files, atomic publish, private modes."""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest

from pacsctl.storage import files
from tests.storage.checks import start_python


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_stage_hashes_and_is_private(tmp_path: Path) -> None:
    tmp = files.ensure_dir(tmp_path / "tmp")
    chunks = [b"abc" * 1000, b"", b"x" * 70000]
    staged = files.stage(tmp, chunks)
    data = b"".join(chunks)
    assert staged.temp_path.read_bytes() == data
    assert staged.size == len(data)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert mode(staged.temp_path) == 0o600
    assert staged.temp_path.parent == tmp and staged.temp_path.name.startswith(f"{os.getpid()}-")
    assert files.sha256_file(staged.temp_path) == (len(data), staged.sha256)


def test_stage_failure_leaves_no_temp_file(tmp_path: Path) -> None:
    tmp = files.ensure_dir(tmp_path / "tmp")

    def chunks():
        yield b"a" * 10000
        raise RuntimeError("source died")

    with pytest.raises(RuntimeError):
        files.stage(tmp, chunks())
    assert list(tmp.iterdir()) == []


def test_ensure_dir_private_even_with_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        made = files.ensure_dir(tmp_path / "a" / "b" / "c")
    finally:
        os.umask(old)
    for path in (tmp_path / "a", tmp_path / "a" / "b", made):
        assert mode(path) == 0o700, path


def test_publish_without_replace_is_create_if_absent(tmp_path: Path) -> None:
    tmp = files.ensure_dir(tmp_path / "tmp")
    target = tmp_path / "objects" / "aa" / "bb" / "1.2.3.dcm"
    first = files.stage(tmp, [b"first"])
    assert files.publish(first, target, replace=False) is True
    assert not first.temp_path.exists()
    second = files.stage(tmp, [b"second"])
    assert files.publish(second, target, replace=False) is False
    assert target.read_bytes() == b"first"
    assert second.temp_path.exists()  # the caller decides what happens to the loser
    assert files.publish(second, target, replace=True) is True
    assert target.read_bytes() == b"second"
    assert list(tmp.iterdir()) == []
    assert mode(target) == 0o600 and mode(target.parent) == 0o700


def test_publish_race_between_processes_has_one_winner(tmp_path: Path) -> None:
    """Eight processes publish different bytes under one name at once: exactly one wins."""
    tmp = files.ensure_dir(tmp_path / "tmp")
    target = tmp_path / "objects" / "race.dcm"
    code = """
import sys, time
from pathlib import Path
from pacsctl.storage import files
tmp, target, me, go = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
staged = files.stage(tmp, [me.encode() * 1000])
while time.time() < go:
    pass
print("won" if files.publish(staged, target, replace=False) else "lost")
"""
    import time

    go = time.time() + 1.5
    procs = [start_python(code, str(tmp), str(target), f"writer{i}", str(go)) for i in range(8)]
    outcomes = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sorted(outcomes) == ["lost"] * 7 + ["won"], outcomes
    winner = outcomes.index("won")
    assert target.read_bytes() == f"writer{winner}".encode() * 1000


BIG = 3 * 1024 * 1024


def test_no_partial_file_is_ever_visible_under_its_final_name(tmp_path: Path) -> None:
    """A reader polling the target folder while another process publishes 3 MiB files
    only ever finds complete files under their final names (never a growing one)."""
    tmp = files.ensure_dir(tmp_path / "tmp")
    target_dir = files.ensure_dir(tmp_path / "objects")
    count = 40
    code = f"""
import sys
from pathlib import Path
from pacsctl.storage import files
tmp, out = Path(sys.argv[1]), Path(sys.argv[2])
for i in range({count}):
    payload = bytes([i % 251]) * {BIG}
    staged = files.stage(tmp, [payload[j:j + 65536] for j in range(0, {BIG}, 65536)], fsync=False)
    files.make_durable([staged.temp_path])
    assert files.publish(staged, out / f"{{i}}.dcm", replace=False)
    files.fsync_dir(out)
"""
    seen: dict[str, int] = {}
    problems: list[str] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for name in os.listdir(target_dir):
                data = (target_dir / name).read_bytes()
                i = int(name.split(".")[0])
                seen[name] = seen.get(name, 0) + 1
                if len(data) != BIG or data.count(bytes([i % 251])) != BIG:
                    problems.append(f"{name}: {len(data)} bytes")

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        writer = start_python(code, str(tmp), str(target_dir))
        _out, err = writer.communicate(timeout=120)
    finally:
        stop.set()
        watcher.join()
    assert writer.returncode == 0, err
    assert not problems, problems[:5]
    assert len(seen) >= count // 2  # the watcher really looked at files as they appeared
    assert sorted(os.listdir(target_dir), key=lambda n: int(n.split(".")[0])) == [f"{i}.dcm" for i in range(count)]


def test_write_atomic_readers_see_old_or_new_never_a_mix(tmp_path: Path) -> None:
    tmp = files.ensure_dir(tmp_path / "tmp")
    target = tmp_path / "config.toml"
    files.write_atomic(tmp, target, b"A" * 100_000)
    code = """
import sys
from pathlib import Path
from pacsctl.storage import files
tmp, target = Path(sys.argv[1]), Path(sys.argv[2])
for i in range(150):
    files.write_atomic(tmp, target, b"B" * 300_000 if i % 2 == 0 else b"A" * 100_000)
"""
    writer = start_python(code, str(tmp), str(target))
    reads = 0
    while writer.poll() is None:
        data = target.read_bytes()
        reads += 1
        assert data in (b"A" * 100_000, b"B" * 300_000), len(data)
    assert writer.returncode == 0, writer.stderr.read()
    assert reads > 10
    assert mode(target) == 0o600
    assert list(tmp.iterdir()) == []


def test_temp_owner_alive_tells_leftovers(tmp_path: Path) -> None:
    tmp = files.ensure_dir(tmp_path / "tmp")
    mine = files.temp_name(tmp)
    assert files.temp_owner_alive(mine)
    child = start_python("pass")
    child.wait()
    dead = tmp / f"{child.pid}-0123.part"
    assert not files.temp_owner_alive(dead)
    assert not files.temp_owner_alive(tmp / "garbage.part")


def test_safe_file_name() -> None:
    assert files.safe_file_name("1.2.840.10008.1") == "1.2.840.10008.1"
    for hostile in ("../../etc/passwd", "1.2/3", "", "1." * 40, "1.2.3 ", "ä"):
        name = files.safe_file_name(hostile)
        assert "/" not in name and name and len(name) <= 64
        assert name.startswith("x")
