"""Benchmark `pacsctl verify` and `pacsctl backup` against openssl and cp in the same run.

    python -m benchmarks.bench_verify [CORPUS_DIR] [--count 1000] [--repeat 3] [--jobs N]

Imports the CT corpus (benchmarks/corpus.py; written to CORPUS_DIR if missing) into a fresh
archive, then times, with a warm page cache for both sides:

- `pacsctl verify` (full: re-hash, header parse, index check; the whole process, start-up
  included) against `openssl dgst -sha256` over the same archive files: the practical limit
  of a full check. Goal: ratio <= 1.5.
- `pacsctl verify --quick` (presence and sizes) against the same openssl run, and
  `pacsctl reindex` (every file read, hashed and parsed; the index rebuilt).
- `pacsctl backup DEST` into an empty folder (every copy hashed, made durable, renamed;
  manifest) against `cp -r` of the objects folder, and against `cp -r` followed by `sync`
  (durable, like the backup); then a second, incremental `backup` with nothing new.

The machine is shared: every figure comes from `--repeat` interleaved rounds (each round runs
every command once, so the commands of a round share one load level); times are the best
round, ratios the median of the per-round ratios. CPU seconds (all processes of a command,
workers included) are printed too.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.corpus import corpus_files, write_corpus  # noqa: E402


def _env(archive: Path) -> dict[str, str]:
    env = dict(os.environ, PACSCTL_ARCHIVE=str(archive), NO_COLOR="1")
    # As an installed copy runs: its bytecode cached (a shell that sets this would make every
    # timed run compile pacsctl's modules again, ~50 ms of start-up no user pays).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Run:
    """One timed command: wall and CPU seconds (all its processes), and its stdout."""

    wall: float
    cpu: float
    stdout: str


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> Run:
    cpu = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return Run(wall, _children_cpu() - cpu, proc.stdout)


def _rounds(repeat: int, commands: dict[str, Callable[[], Run]]) -> dict[str, list[Run]]:
    """Run every command once per round, interleaved, so each round shares the same load."""
    runs: dict[str, list[Run]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, run in commands.items():
            runs[name].append(run())
    return runs


def _ratio(runs: dict[str, list[Run]], name: str, base: str) -> float:
    """Median over rounds of name's wall time divided by base's in the same round."""
    return statistics.median(a.wall / b.wall for a, b in zip(runs[name], runs[base]))


def _best(runs: list[Run]) -> Run:
    return min(runs, key=lambda r: r.wall)


def _summary(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def _import(archive: Path, corpus: Path, jobs: int) -> int:
    from pacsctl.archive.archive import Archive
    from pacsctl.ingest.importer import collect_sources, import_sources

    with Archive.open(archive) as arch:
        summary = import_sources(arch, collect_sources([str(corpus)]), jobs=jobs)
    return summary.imported + summary.duplicates


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=Path(tempfile.gettempdir()) / "pacsctl-corpus")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--jobs", type=int, default=None, help="pacsctl --jobs (default: its own)")
    args = parser.parse_args(argv)

    files = write_corpus(args.corpus, args.count) if len(corpus_files(args.corpus)) != args.count else corpus_files(args.corpus)
    total = sum(f.stat().st_size for f in files)
    py = [sys.executable, "-m", "pacsctl"]
    jobs = ["--jobs", str(args.jobs)] if args.jobs else []
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        root = Path(tmp)
        archive = root / "archive"
        count = _import(archive, args.corpus, jobs=os.cpu_count() or 1)
        objects = sorted(str(p) for p in (archive / "objects").glob("*/*/*.dcm"))
        env = _env(archive)
        print(f"corpus: {count} instances, {total / 2**20:.1f} MiB; archive {archive}; {os.cpu_count()} cores")

        openssl = ["openssl", "dgst", "-sha256", *objects]
        _timed(openssl)  # warm the page cache for both sides
        _timed([*py, "verify", "--json", *jobs], env)
        runs = _rounds(args.repeat, {
            "openssl": lambda: _timed(openssl),
            "verify": lambda: _timed([*py, "verify", "--json", *jobs], env),
            "quick": lambda: _timed([*py, "verify", "--quick", "--json"], env),
            "help": lambda: _timed([*py, "--help"], env),
            "reindex": lambda: _timed([*py, "reindex", "--json", *jobs], env),
        })
        checks = [_summary(r.stdout) for r in runs["verify"]]
        assert all(c["ok"] and c["hashed"] == count for c in checks), checks[0]
        checking = [c["elapsed"] for c in checks]
        mb = total / 1e6
        ssl, full, quick, start = (_best(runs[k]) for k in ("openssl", "verify", "quick", "help"))
        print(f"{args.repeat} interleaved rounds; times are the best round, ratios the median of per-round ratios")
        print(f"openssl dgst -sha256      {ssl.wall:6.2f} s  {mb / ssl.wall:6.0f} MB/s  CPU {ssl.cpu:5.2f} s")
        print(f"pacsctl verify (full)     {full.wall:6.2f} s  {mb / full.wall:6.0f} MB/s  CPU {full.cpu:5.2f} s"
              f"  ratio {_ratio(runs, 'verify', 'openssl'):.2f} (goal <= 1.5)")
        print(f"  the check alone (summary elapsed: index, walk, re-hash, parse) {min(checking):.2f} s,"
              f" ratio {statistics.median(c / o.wall for c, o in zip(checking, runs['openssl'])):.2f}")
        print(f"  CLI start-up (`pacsctl --help`) {start.wall:.2f} s, CPU {start.cpu:.2f} s: in every command")
        print(f"pacsctl verify --quick    {quick.wall:6.2f} s  {count / quick.wall:6.0f} files/s          "
              f"ratio {_ratio(runs, 'quick', 'openssl'):.2f}")

        def fresh(name: str) -> Path:
            path = root / name
            shutil.rmtree(path, ignore_errors=True)
            return path

        copies = _rounds(args.repeat, {
            "cp": lambda: _timed(["cp", "-r", str(archive / "objects"), str(fresh("cp"))]),
            "cp_sync": lambda: _timed(["sh", "-c", f"cp -r '{archive / 'objects'}' '{fresh('cps')}' && sync"]),
            "backup": lambda: _timed([*py, "backup", str(fresh("backup")), "--json", *jobs], env),
            "again": lambda: _timed([*py, "backup", str(root / "backup"), "--json", *jobs], env),
        })
        first, again = _summary(copies["backup"][-1].stdout), _summary(copies["again"][-1].stdout)
        assert first["copied"] == count and again["copied"] == 0 and again["skipped"] == count, (first, again)
        assert _summary(runs["reindex"][-1].stdout)["indexed"] == count
        cp, cp_sync, new, incr = (_best(copies[k]) for k in ("cp", "cp_sync", "backup", "again"))
        rebuilt = _best(runs["reindex"])
        print(f"cp -r                     {cp.wall:6.2f} s  {mb / cp.wall:6.0f} MB/s  CPU {cp.cpu:5.2f} s")
        print(f"cp -r && sync             {cp_sync.wall:6.2f} s  {mb / cp_sync.wall:6.0f} MB/s  CPU {cp_sync.cpu:5.2f} s")
        print(f"pacsctl backup (new DEST) {new.wall:6.2f} s  {mb / new.wall:6.0f} MB/s  CPU {new.cpu:5.2f} s"
              f"  ratio {_ratio(copies, 'backup', 'cp'):.2f} vs cp -r, {_ratio(copies, 'backup', 'cp_sync'):.2f} vs cp -r && sync")
        print(f"pacsctl backup (no change){incr.wall:6.2f} s                 CPU {incr.cpu:5.2f} s  ratio {_ratio(copies, 'again', 'cp'):.2f} vs cp -r")
        print(f"pacsctl reindex           {rebuilt.wall:6.2f} s  {count / rebuilt.wall:6.0f} files/s  CPU {rebuilt.cpu:5.2f} s"
              f"  ratio {_ratio(runs, 'reindex', 'openssl'):.2f} vs openssl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
