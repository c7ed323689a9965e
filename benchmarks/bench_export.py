"""Benchmark `pacsctl export --format folder` and `--format zip` against `cp -r` + `sync` and
`zip -r -0` of the same files, in the same run.

    python -m benchmarks.bench_export [CORPUS_DIR] [--count 1000] [--repeat 3]

Imports the CT corpus (benchmarks/corpus.py; written to CORPUS_DIR if missing) into a fresh
archive, then times, warm page cache, each command as a whole process (pacsctl's start-up
included):

- `pacsctl export DEST --all` (every file copied, hash-checked against the ingest record, made
  durable, read back from the disk with its cached pages dropped, manifest, rename) against
  `cp -r objects/ DEST && sync` (durable, no check). Goal: ratio <= 2. Also against `cp -r`
  of an earlier export's own folder (the same files in the tree export writes: patient / study /
  series, some tens of folders instead of the archive's ~1250 fan-out folders, whose creation
  dominates `cp`'s time on some file systems), so that neither tree's shape decides the ratio.
- `pacsctl export DEST.zip --all --format zip` (stored members, the same checks) against
  `zip -r -0 -q` of the objects folder followed by `sync`. Goal: ratio <= 2.

Rounds are interleaved (each runs every command once, so a round shares one load level); times
are the best round, ratios the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_verify import Run, _best, _env, _import, _ratio, _rounds, _summary, _timed  # noqa: E402
from benchmarks.corpus import corpus_files, write_corpus  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=Path(tempfile.gettempdir()) / "pacsctl-corpus")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--own-fs", metavar="SIZE", help="put the archive and the exports on a "
                        "loop-mounted ext4 image of SIZE (e.g. 3G; root): this machine's root file "
                        "system creates folders slowly for a while after many deletions")
    args = parser.parse_args(argv)

    found = corpus_files(args.corpus)
    files = found if len(found) == args.count else write_corpus(args.corpus, args.count)
    total = sum(f.stat().st_size for f in files)
    py = [sys.executable, "-m", "pacsctl"]
    work = args.corpus.parent
    if args.own_fs:
        from benchmarks.bench_index import own_file_system

        work = own_file_system(Path(tempfile.gettempdir()) / "bench-export-fs", args.own_fs)
    with tempfile.TemporaryDirectory(prefix="bench-export-", dir=work) as tmp:
        root = Path(tmp)
        archive = root / "archive"
        stored = _import(archive, args.corpus, jobs=2)
        env = _env(archive)
        out = root / "out"

        def fresh(path: Path) -> Path:
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
            os.sync()  # untimed: the deletion's writes must not be paid by the next timed command
            return path

        def export_folder() -> Run:
            run = _timed([*py, "export", str(fresh(out)), "--all", "--json"], env)
            assert _summary(run.stdout)["exported"] == stored
            return run

        def cp_sync() -> Run:
            return _timed(["sh", "-c", f"cp -r '{archive / 'objects'}' '{fresh(out)}' && sync"])

        shaped = root / "shaped"  # an export's tree, untimed, as the source of the second cp
        _timed([*py, "export", str(shaped), "--all", "--json"], env)

        def cp_shaped_sync() -> Run:
            return _timed(["sh", "-c", f"cp -r '{shaped}' '{fresh(out)}' && sync"])

        def export_zip() -> Run:
            run = _timed([*py, "export", str(fresh(out.with_suffix('.zip'))), "--all", "-f", "zip", "--json"], env)
            assert _summary(run.stdout)["exported"] == stored
            return run

        def zip_sync() -> Run:
            target = fresh(out.with_suffix(".zip"))
            return _timed(["sh", "-c", f"cd '{archive}' && zip -r -0 -q '{target}' objects && sync"])

        runs = _rounds(
            args.repeat,
            {"export": export_folder, "cp+sync": cp_sync, "cp tree+sync": cp_shaped_sync,
             "export zip": export_zip, "zip -0+sync": zip_sync},
        )  # fmt: skip
    print(f"corpus: {stored} instances, {total / 1e6:.0f} MB; best of {args.repeat} interleaved rounds")
    for name in runs:
        best = _best(runs[name])
        print(f"{name:12} {best.wall:6.2f} s  cpu {best.cpu:5.2f} s")
    print(f"export folder / (cp -r + sync): {_ratio(runs, 'export', 'cp+sync'):.2f}x (goal <= 2)")
    print(f"export folder / (cp -r of export's tree + sync): {_ratio(runs, 'export', 'cp tree+sync'):.2f}x")
    print(f"export zip / (zip -r -0 + sync): {_ratio(runs, 'export zip', 'zip -0+sync'):.2f}x (goal <= 2)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
