"""Benchmark `pacsctl backup s3://` against `aws s3 sync` and `rclone sync` of the same files to the
same store (OpenStack Swift's S3 API on loopback, tests/s3server.py), in the same run.

    python -m benchmarks.bench_backup_s3 [CORPUS_DIR] [--count 1000] [--repeat 2] [--jobs N]

Imports the CT corpus (benchmarks/corpus.py; written to CORPUS_DIR if missing) into a fresh
archive, starts one Swift, then, in interleaved rounds (each round runs every command once, so
the commands of a round share one load level):

- full: each tool uploads the archive's objects/ into a new prefix of one bucket. pacsctl also
  checks every file against the SHA-256 recorded at ingest, keeps it in the object's metadata
  and writes the manifest; `aws s3 sync` and `rclone sync` run with their defaults (10 and 4
  parallel transfers). Goal: pacsctl <= 1.2x the faster of the two.
- incremental: each tool again into the prefix it just filled, nothing new. Goal: <= 2x.

Times are the best round, ratios the median of the per-round ratios (whole processes, start-up
included). Needs the Swift packages (see tests/s3server.py), the AWS CLI and rclone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_verify import Run, _best, _env, _import, _ratio, _rounds, _summary, _timed  # noqa: E402
from benchmarks.corpus import corpus_files, write_corpus  # noqa: E402
from tests.s3server import SwiftS3  # noqa: E402

BUCKET = "bench"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=Path(tempfile.gettempdir()) / "pacsctl-corpus")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--jobs", type=int, default=None, help="pacsctl --jobs (default: its own, 10)")
    args = parser.parse_args(argv)
    for tool in ("aws", "rclone"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is missing (apt-get install awscli rclone)")

    files = (
        write_corpus(args.corpus, args.count)
        if len(corpus_files(args.corpus)) != args.count
        else corpus_files(args.corpus)
    )
    total = sum(f.stat().st_size for f in files)
    jobs = ["--jobs", str(args.jobs)] if args.jobs else []
    py = [sys.executable, "-m", "pacsctl"]
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp, SwiftS3(Path(tmp) / "swift") as store:
        root = Path(tmp)
        archive = root / "archive"
        count = _import(archive, args.corpus, jobs=os.cpu_count() or 1)
        objects = archive / "objects"
        store.make_bucket(BUCKET)
        env = {**_env(archive), **store.env, "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
        env.pop("AWS_PROFILE", None)
        rclone_env = {
            **env,
            "RCLONE_CONFIG_SWIFT_TYPE": "s3",
            "RCLONE_CONFIG_SWIFT_PROVIDER": "Other",
            "RCLONE_CONFIG_SWIFT_ENDPOINT": store.endpoint,
            "RCLONE_CONFIG_SWIFT_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
            "RCLONE_CONFIG_SWIFT_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
            "RCLONE_CONFIG_SWIFT_REGION": env["AWS_DEFAULT_REGION"],
            "RCLONE_CONFIG_SWIFT_FORCE_PATH_STYLE": "true",
        }
        rclone_env.pop("AWS_CA_BUNDLE", None)  # rclone's AWS SDK refuses its own HTTP transport with one
        print(f"corpus: {count} instances, {total / 2**20:.1f} MiB; Swift at {store.endpoint}; {os.cpu_count()} cores")
        _timed(["sh", "-c", f"cat $(find '{objects}' -name '*.dcm') > /dev/null"])  # warm the page cache

        rounds = iter(range(1000))
        current = {"n": 0}

        def prefix(tool: str) -> str:
            return f"{tool}-{current['n']}"

        def full(tool: str) -> Run:
            if tool == "pacsctl":
                current["n"] = next(rounds)  # each round's full runs go into new prefixes
            url = f"s3://{BUCKET}/{prefix(tool)}"
            if tool == "pacsctl":
                return _timed([*py, "backup", url, "--json", *jobs], env)
            if tool == "aws":
                return _timed(["aws", "s3", "sync", "--only-show-errors", str(objects), f"{url}/objects"], env)
            return _timed(["rclone", "sync", str(objects), f"swift:{BUCKET}/{prefix(tool)}/objects"], rclone_env)

        runs = _rounds(
            args.repeat,
            {
                "pacsctl": lambda: full("pacsctl"),
                "aws": lambda: full("aws"),
                "rclone": lambda: full("rclone"),
                "pacsctl_again": lambda: _timed(
                    [*py, "backup", f"s3://{BUCKET}/{prefix('pacsctl')}", "--json", *jobs], env
                ),
                "aws_again": lambda: _timed(
                    [
                        "aws",
                        "s3",
                        "sync",
                        "--only-show-errors",
                        str(objects),
                        f"s3://{BUCKET}/{prefix('aws')}/objects",
                    ],
                    env,
                ),
                "rclone_again": lambda: _timed(
                    ["rclone", "sync", str(objects), f"swift:{BUCKET}/{prefix('rclone')}/objects"], rclone_env
                ),
            },
        )
        first, again = _summary(runs["pacsctl"][-1].stdout), _summary(runs["pacsctl_again"][-1].stdout)
        assert first["copied"] == count and again["copied"] == 0 and again["skipped"] == count, (first, again)
        mb = total / 1e6
        print(f"{args.repeat} interleaved rounds; times are the best round, ratios the median of per-round ratios")
        for name in ("pacsctl", "aws", "rclone"):
            best = _best(runs[name])
            print(f"full  {name:8} {best.wall:6.2f} s  {mb / best.wall:6.0f} MB/s  CPU {best.cpu:5.2f} s")
        for name in ("pacsctl", "aws", "rclone"):
            best = _best(runs[f"{name}_again"])
            print(f"again {name:8} {best.wall:6.2f} s                 CPU {best.cpu:5.2f} s")
        faster_full = [min(a.wall, r.wall) for a, r in zip(runs["aws"], runs["rclone"], strict=True)]
        faster_again = [min(a.wall, r.wall) for a, r in zip(runs["aws_again"], runs["rclone_again"], strict=True)]
        ratio_full = statistics.median(p.wall / f for p, f in zip(runs["pacsctl"], faster_full, strict=True))
        ratio_again = statistics.median(p.wall / f for p, f in zip(runs["pacsctl_again"], faster_again, strict=True))
        print(
            f"full:  pacsctl / faster peer {ratio_full:.2f} (goal <= 1.2); vs aws {_ratio(runs, 'pacsctl', 'aws'):.2f}, "
            f"vs rclone {_ratio(runs, 'pacsctl', 'rclone'):.2f}"
        )
        print(
            f"again: pacsctl / faster peer {ratio_again:.2f} (goal <= 2); "
            f"vs aws {_ratio(runs, 'pacsctl_again', 'aws_again'):.2f}, "
            f"vs rclone {_ratio(runs, 'pacsctl_again', 'rclone_again'):.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
