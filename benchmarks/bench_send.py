"""Send speed of `pacsctl send` against DCMTK `storescu`, same files, same receiver, same run.

    python benchmarks/bench_send.py [--corpus /tmp/corpus1k] [--count 1000] [--rounds 3] [--jobs 1 2]

Both send the corpus (CT 512x512x16 bit, see corpus.py) to one DCMTK `storescp` (writes files,
`+xa`: every syntax accepted, so both send the stored bytes), in interleaved rounds; the
received files are removed between rounds. `pacsctl send` runs as a user runs it (a new
Python process, start-up included) with each `-j` of `--jobs` (2 is its default), `storescu`
over one association. Prints each round's wall and CPU seconds, the best and median of each
and the ratios pacsctl / storescu (lower is better; the goal is <= 1.5). `PACSCTL_FAST_PATH=0`
in the environment measures pynetdicom's own send path.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.corpus import corpus_files, write_corpus  # noqa: E402
from benchmarks.peers import StoreSCPPeer, time_storescu  # noqa: E402


def _children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def time_pacsctl_send(files: list[str], port: int, aet: str, associations: int, archive: Path) -> float:
    """Wall seconds of `python -m pacsctl send AET@127.0.0.1:PORT FILES -j N` (whole command)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cmd = [sys.executable, "-m", "pacsctl", "--archive", str(archive), "send", f"{aet}@127.0.0.1:{port}",
           "-j", str(associations), "--json", *files]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"pacsctl send exited {proc.returncode}: {proc.stderr[-800:]}{proc.stdout[-800:]}")
    return elapsed


def _clear(folder: Path) -> None:
    for path in folder.iterdir():
        if path.is_file():
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", default="/tmp/corpus1k", help="corpus folder (written if missing)")
    parser.add_argument("--count", type=int, default=1000, help="instances in the corpus")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of each sender")
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 2], help="pacsctl send -j values to run")
    args = parser.parse_args(argv)

    corpus = Path(args.corpus)
    files = [str(p) for p in (corpus_files(corpus) if (corpus / ".corpus.json").exists() else [])]
    if len(files) != args.count:
        files = [str(p) for p in write_corpus(corpus, args.count)]
    size = sum(Path(f).stat().st_size for f in files)
    print(f"{len(files)} files, {size / 2**20:.0f} MiB, {args.rounds} rounds", flush=True)
    names = ["storescu", *(f"pacsctl send -j {j}" for j in args.jobs)]
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="bench-send-") as tmp:
        archive = Path(tmp) / "archive"  # for the calling AE title; nothing is stored in it
        with StoreSCPPeer(Path(tmp) / "storescp") as scp:
            for n in range(args.rounds):
                for name in names[n % len(names) :] + names[: n % len(names)]:  # rotate the order
                    used = _children_cpu()
                    if name == "storescu":
                        secs = time_storescu(files, scp.port, called_aet=scp.aet)
                    else:
                        secs = time_pacsctl_send(files, scp.port, scp.aet, int(name.split()[-1]), archive)
                    cpu[name].append(_children_cpu() - used)
                    received = len(scp.files())
                    if received != len(files):
                        raise RuntimeError(f"{name}: storescp holds {received} of {len(files)} files")
                    _clear(scp.dir)
                    times[name].append(secs)
                    print(f"round {n + 1}: {name:18s} {secs:6.2f} s  {len(files) / secs:6.0f} inst/s  "
                          f"CPU {cpu[name][-1]:5.2f} s", flush=True)
        shutil.rmtree(archive, ignore_errors=True)
    theirs = times["storescu"]
    print(f"storescu: best {min(theirs):.2f} s, median {statistics.median(theirs):.2f} s, "
          f"CPU median {statistics.median(cpu['storescu']):.2f} s")
    for name in names[1:]:
        ours = times[name]
        print(f"{name}: best {min(ours):.2f} s, median {statistics.median(ours):.2f} s, "
              f"CPU median {statistics.median(cpu[name]):.2f} s; ratio to storescu: best "
              f"{min(ours) / min(theirs):.2f}x, median {statistics.median(ours) / statistics.median(theirs):.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
