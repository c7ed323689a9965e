"""A temp file whose writer is a zombie (killed, not yet reaped) is a dead writer's leftover."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from pacsctl.storage import files


def test_a_zombie_writers_temp_file_is_removed(tmp_path: Path) -> None:
    pid = os.fork()
    if pid == 0:  # the writer: waits to be killed
        time.sleep(60)
        os._exit(0)
    try:
        leftover = tmp_path / f"{pid}-x{files.TMP_SUFFIX}"
        leftover.write_bytes(b"half")
        assert files.temp_owner_alive(leftover)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] != "Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert files.remove_dead_writers_temps(tmp_path) == 1  # not reaped yet: still a zombie
        assert not leftover.exists()
    finally:
        os.waitpid(pid, 0)
