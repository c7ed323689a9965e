"""A run killed with SIGKILL leaves no half-written output: every file under OUT is complete,
and the next run cleans the dead run's temp files and completes the folder."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pydicom

from benchmarks.corpus import make_ct
from tests.helpers import CliProcess, run_cli

FILES = 120


def test_sigkill_mid_run_leaves_only_complete_files(tmp_path: Path) -> None:
    source = tmp_path / "in"
    for number in range(FILES):
        make_ct(source / f"{number:04d}.dcm", rows=256, cols=256, instance_number=number, pixel_seed=number)
    out = tmp_path / "out"
    run = CliProcess("anonymize", source, "--out", out, "--key", "k", "--jobs", "2", log_dir=tmp_path / "log")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and run.proc.poll() is None:
        if sum(1 for _ in out.rglob("*.dcm")) >= 10:  # well into the run
            break
        time.sleep(0.01)
    run.proc.send_signal(signal.SIGKILL)  # workers die with it (PR_SET_PDEATHSIG)
    run.proc.wait(30)
    written = list(out.rglob("*.dcm"))
    assert written, run.stderr()
    for path in written:  # each complete: it parses to the end and holds all its pixels
        ds = pydicom.dcmread(path)
        assert len(ds.PixelData) == 256 * 256 * 2
    finished = run_cli("anonymize", source, "--out", out, "--key", "k", "--json", timeout=300)
    assert finished.returncode == 0, finished.stderr
    assert sum(1 for _ in out.rglob("*.dcm")) == FILES
    leftovers = [p for p in (out / ".pacsctl-tmp").glob("*")] if (out / ".pacsctl-tmp").exists() else []
    assert leftovers == []
