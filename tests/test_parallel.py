"""`map_unordered`: a worker that dies ends the run with WorkerDiedError, never a hang.

Real forked workers, a real SIGKILL. An idle worker holds the task queue's read lock while it
waits, so once it is killed the survivor can never take the executor's stop sentinel; and the
survivors ignore SIGTERM (the parent decides how to stop), so the executor's own clean-up of a
broken pool (SIGTERM, then join) waited for ever.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import os, signal, time
    from pacsctl.parallel import WorkerDiedError, map_unordered

    def work(n):
        if n == 0:
            time.sleep(1.0)  # busy while the other worker, idle, is killed
        return os.getpid()

    try:
        for pid in map_unordered(work, range(2), 2):
            os.kill(pid, signal.SIGKILL)  # the first result comes from the worker now idle
            time.sleep(0.2)
    except WorkerDiedError as error:
        print("died:", error)
    """
)


def test_killing_an_idle_worker_ends_the_run_with_a_clear_error() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "died: a worker process died" in result.stdout
