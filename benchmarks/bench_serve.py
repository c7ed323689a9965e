"""Receive speed of `pacsctl serve` against DCMTK storescp and Orthanc, same corpus, same run.

    python benchmarks/bench_serve.py [--count 1000] [--corpus DIR] [--workers N] [--assoc 1 4]
                                     [--route]

DCMTK `storescu` (TCP_NODELAY=1) sends the corpus (CT 512x512x16 bit, see corpus.py) to:
- `pacsctl serve` (durable: fsync before each answer, group commit; indexed),
- DCMTK `storescp` (writes files, no fsync, no index),
- Orthanc 1.10 (SQLite index),
each fresh and empty, with 1 and with 4 associations at once, in interleaved rounds. Prints the
best wall seconds of each, instances per second, the median, and the ratios pacsctl/storescp
and pacsctl/Orthanc of the bests and of the medians (lower is better). The machine is noisy:
only ratios measured in the same run mean anything.

With --route, every round also times `pacsctl serve` with a route active (`pacsctl route add`
to a DCMTK storescp writing to /dev/shm, every instance matching): the stores queue their forwards and serve's
forwarder delivers them while the corpus arrives. Printed as "pacsctl+route", with how long
after the last acknowledgement the last forward arrived ("drain").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.corpus import corpus_files, write_corpus  # noqa: E402
from benchmarks.peers import StoreSCPPeer, peer_baselines, time_storescu  # noqa: E402


def start_serve(archive: Path, workers: int) -> tuple[subprocess.Popen[bytes], int]:
    """Start `python -m pacsctl serve` on a free port; return the process and its port."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pacsctl", "--archive", str(archive), "serve", "--host",
         "127.0.0.1", "--port", "0", "--workers", str(workers), "--aet", "PACSCTL"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode(errors="replace")
        found = re.search(r"on [^ ]+:(\d+) \(", line)
        if found:
            return proc, int(found.group(1))
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("pacsctl serve did not start")


def stop_serve(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def count_instances(archive: Path) -> int:
    """Instances the archive's index holds (asks `pacsctl ls`, as a user would)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run(
        [sys.executable, "-m", "pacsctl", "--archive", str(archive), "ls", "--level",
         "instance", "--json"], env=env, capture_output=True, text=True, check=True,
    ).stdout
    return sum(1 for line in out.splitlines() if line.strip().startswith("{")
               and "SOPInstanceUID" in json.loads(line))


def add_route(archive: Path, dest: str) -> None:
    """`pacsctl route add fwd --to DEST` (creates the archive)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, "-m", "pacsctl", "--archive", str(archive), "route", "add",
                    "fwd", "--to", dest], env=env, check=True, capture_output=True)


def time_pacsctl(files: list[Path], associations: int, workers: int, work: Path,
                 route: bool = False) -> tuple[float, float]:
    """Seconds to receive `files`; with `route`, also the seconds from the last acknowledgement
    until the forwarder had delivered the last of them (else 0)."""
    with tempfile.TemporaryDirectory(prefix="bench-serve-", dir=work) as tmp:
        archive = Path(tmp) / "archive"
        peer = None
        if route:
            # The destination's files go to memory (/dev/shm where there is one): a real one
            # is another machine, and its writes on the archive's file system would be flushed
            # by serve's syncfs, a cost no route has in practice.
            shm = Path("/dev/shm")
            out = Path(tempfile.mkdtemp(prefix="bench-forward-", dir=shm if shm.is_dir() else tmp))
            peer = StoreSCPPeer(out, aet="FORWARD").start()
            add_route(archive, f"FORWARD@127.0.0.1:{peer.port}")
        proc, port = start_serve(archive, workers)
        drain = 0.0
        try:
            secs = time_storescu(files, port, called_aet="PACSCTL", associations=associations)
            if peer is not None:
                done = time.perf_counter()
                deadline = time.monotonic() + 600
                while len(peer.files()) < len(files):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"forwarded {len(peer.files())} of {len(files)}")
                    time.sleep(0.05)
                drain = time.perf_counter() - done
        finally:
            stop_serve(proc)
            if peer is not None:
                peer.stop()
                shutil.rmtree(peer.dir, ignore_errors=True)
        held = count_instances(archive)
        if held != len(files):
            raise RuntimeError(f"pacsctl archive holds {held} of {len(files)} instances")
        return secs, drain


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "corpus1k")
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--assoc", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--work", type=Path, default=None, help="temp folder for archives")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the best time counts")
    parser.add_argument("--route", action="store_true",
                        help="also time serve with a route to a DCMTK storescp active")
    parser.add_argument("--own-fs", metavar="SIZE", help="put every receiver's storage on a "
                        "loop-mounted ext4 image of SIZE (e.g. 3G; root), so other processes' "
                        "writes do not land in pacsctl's syncfs or the peers' fsyncs")
    args = parser.parse_args(argv)

    if args.own_fs:
        from benchmarks.bench_index import own_file_system

        args.work = own_file_system(Path(tempfile.gettempdir()) / "bench-serve-fs", args.own_fs)
    write_corpus(args.corpus, count=args.count)
    files = corpus_files(args.corpus)[: args.count]
    size = sum(f.stat().st_size for f in files) / 1e6
    print(f"corpus: {len(files)} instances, {size:.0f} MB, {args.corpus}")
    print(f"{'assoc':>5} {'receiver':<22} {'seconds':>8} {'inst/s':>7} {'median':>8}"
          f"   (best and median of {args.repeat})")
    for n in args.assoc:
        times: dict[str, list[float]] = {}
        ours_name = f"pacsctl ({args.workers} workers)"
        routed_name = "pacsctl+route"
        drains: list[float] = []
        work = args.work or Path(tempfile.gettempdir())
        for _ in range(args.repeat):  # interleaved rounds: each peer sees the same noise
            secs, _ = time_pacsctl(files, n, args.workers, work)
            times.setdefault(ours_name, []).append(secs)
            if args.route:
                secs, drain = time_pacsctl(files, n, args.workers, work, route=True)
                times.setdefault(routed_name, []).append(secs)
                drains.append(drain)
            for name, t in peer_baselines(files, associations=n, work_dir=args.work).items():
                times.setdefault(name, []).append(t)
        best = {name: min(ts) for name, ts in times.items()}
        median = {name: statistics.median(ts) for name, ts in times.items()}
        for name, secs in best.items():
            print(f"{n:>5} {name:<22} {secs:8.2f} {len(files) / secs:7.0f} {median[name]:8.2f}")
        if drains:
            print(f"{n:>5} {'route drain (median)':<22} {statistics.median(drains):8.2f}"
                  "   s after the last acknowledgement until the last forward arrived")
        if routed_name in best:
            # Rounds pair a run with a route and one without under the same load: the median of
            # those paired ratios is the least noisy figure of what the route costs.
            paired = statistics.median(r / o for r, o in zip(times[routed_name], times[ours_name]))
            print(f"{n:>5} ratio route/no route      {best[routed_name] / best[ours_name]:8.2f} "
                  f"{median[routed_name] / median[ours_name]:15.2f}   paired per round {paired:.2f}")
        for name, secs in best.items():
            if name not in (ours_name, routed_name):
                print(f"{n:>5} ratio pacsctl/{name:<10} {best[ours_name] / secs:8.2f} "
                      f"{median[ours_name] / median[name]:15.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
