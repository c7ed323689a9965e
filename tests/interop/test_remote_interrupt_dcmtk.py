"""One Ctrl-C stops `pacsctl send` to DCMTK's storescp, an independent receiver (issue 10
item 1): after the signal only what was in flight lands, the summary is printed, exit 130."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

from tests.helpers import REPO_ROOT, cli_env


def _received(scp: Any) -> int:
    return sum(1 for p in scp.dir.iterdir() if p.is_file())


def test_ctrl_c_stops_send_to_storescp(storescp: Any, ct_factory: Any, archive_dir: Any) -> None:
    ct_factory.series(400, patient_id="P1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pacsctl", "send", f"{storescp.aet}@127.0.0.1:{storescp.port}",
         str(ct_factory.directory), "-j", "2", "--json"],
        env=cli_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    deadline = time.monotonic() + 60
    while _received(storescp) < 30 and proc.poll() is None:
        assert time.monotonic() < deadline, "nothing arrived at storescp"
        time.sleep(0.01)
    at_signal = _received(storescp)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert time.monotonic() - signalled < 8.0
    time.sleep(1.0)
    # One C-STORE in flight per association, and one per association being written when
    # the folder was counted.
    assert _received(storescp) - at_signal <= 4, (at_signal, _received(storescp))
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    summary = json.loads(out.splitlines()[-1])
    assert summary["interrupted"] is True and summary["not_sent"] > 0
    assert summary["sent"] <= _received(storescp)
    assert summary["sent"] + summary["not_sent"] + summary["failed"] == 400
