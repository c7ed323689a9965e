"""Import throughput: `pacsctl import` vs DCMTK `storescu` into Orthanc, same files, same run.

    python -m benchmarks.bench_import [CORPUS_DIR] [--count 1000] [--jobs 2] [--rounds 2]

Writes (or reuses) the DESIGN.md corpus (COUNT CT instances of 512x512x16 bit), warms the page
cache by reading every file once, then for each round:

- pacsctl: ``python -m pacsctl --archive FRESH import --jobs N --json CORPUS`` in a subprocess
  (process start-up included; durable: data and names synced, indexed, index folded at the end);
- Orthanc 1.10 (fresh, SyncStorageArea on, SQLite index): DCMTK ``storescu`` over 1 association
  (DESIGN.md's reference) and over N associations (the same parallelism as ``--jobs N``).

Prints every time, the rates (instances/s, MB/s) and the ratio pacsctl/Orthanc (goal: >= 2x),
using the best round of each. All data lives in one temp folder on the corpus' file system.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.corpus import write_corpus  # noqa: E402
from benchmarks.peers import OrthancPeer, time_storescu  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def warm(files: list[Path]) -> int:
    """Read every file once (both sides then read from the page cache); return total bytes."""
    total = 0
    for path in files:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                total += len(chunk)
    return total


def time_pacsctl(corpus: Path, archive: Path, jobs: int) -> tuple[float, dict]:
    """Wall seconds of a `pacsctl import` subprocess into a fresh archive, and its summary."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, "-m", "pacsctl", "--archive", str(archive), "import", "--jobs", str(jobs), "--json", str(corpus)]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"pacsctl import failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return elapsed, json.loads(proc.stdout.splitlines()[-1])


def time_orthanc(files: list[Path], work: Path, associations: int) -> float:
    with OrthancPeer(work) as orthanc:
        secs = time_storescu(files, orthanc.dicom_port, called_aet=orthanc.aet, associations=associations)
        held = orthanc.instance_count()
    if held != len(files):
        raise SystemExit(f"Orthanc holds {held} of {len(files)} instances")
    return secs


def line(name: str, secs: float, n: int, size: int) -> str:
    return f"  {name:44} {secs:7.2f} s  {n / secs:7.1f} inst/s  {size / secs / 2**20:7.1f} MiB/s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=Path(tempfile.gettempdir()) / "pacsctl-corpus")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each; the best counts")
    args = parser.parse_args(argv)

    files = write_corpus(args.corpus, args.count)
    size = warm(files)
    n = len(files)
    print(f"corpus: {n} CT instances, {size / 2**20:.1f} MiB in {args.corpus}; {os.cpu_count()} cores; jobs {args.jobs}")
    best: dict[str, float] = {}
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="bench-import-", dir=args.corpus.parent) as tmp:
        for r in range(args.rounds):
            runs = {
                f"pacsctl import --jobs {args.jobs}": lambda: time_pacsctl(args.corpus, Path(tmp) / f"archive{r}", args.jobs),
                "storescu -> Orthanc, 1 association": lambda: time_orthanc(files, Path(tmp) / f"orthanc1-{r}", 1),
                f"storescu -> Orthanc, {args.jobs} associations": lambda: time_orthanc(files, Path(tmp) / f"orthancN-{r}", args.jobs),
            }
            print(f"round {r + 1}:")
            rounds.append({})
            for name, run in runs.items():
                out = run()
                secs = out[0] if isinstance(out, tuple) else out
                if isinstance(out, tuple):
                    summary = out[1]
                    if summary["imported"] != n or summary["quarantined"]:  # (.corpus.json is skipped)
                        raise SystemExit(f"pacsctl imported {summary['imported']} of {n}: {summary}")
                print(line(name, secs, n, size), flush=True)
                best[name] = min(secs, best.get(name, float("inf")))
                rounds[-1][name] = secs
                subprocess.run(["sync"], check=False)  # let neither side pay for the other's writeback
    ours = next(v for k, v in best.items() if k.startswith("pacsctl"))
    print("best of each:")
    for name, secs in best.items():
        print(line(name, secs, n, size))
    ours_name = next(k for k in best if k.startswith("pacsctl"))
    for name, secs in best.items():
        if name.startswith("storescu"):
            paired = sorted(rnd[name] / rnd[ours_name] for rnd in rounds)
            print(f"ratio pacsctl / ({name}): best vs best {secs / ours:.2f}x the rate, median of paired rounds "
                  f"{statistics.median(paired):.2f}x (goal >= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
