"""Index scale: a study lookup by PatientID and the ingest rate, at 1,000,000 instances.

    python -m benchmarks.bench_index [--dir DIR] [--instances 1000000] [--new 30000]

Builds (once; reused by later runs) an index of synthesised records with a realistic shape:
10 instances per series, 5 series per study, 2 studies per patient (1M instances = 100k series,
20k studies, 10k patients), through `Index.add` + `flush` as ingest does. Then measures:

- lookup: `ls --level study -k PatientID=X` as the CLI runs it (`archive.search.find_records` on a
  fresh `Index`), for 200 random patients: median / p95 / max of index time; once more with the
  page cache dropped (cold), and once with a live writer's 2000 unfolded journal records.
- ingest: NEW records (new patients and studies) added in batches of 16, durable (fdatasync per
  batch, folds every 2000 records, a final flush) as `Archive.ingest` does, into an empty index
  and into the 1M index, alternating (--rounds); rate = records/s; ratio 1M/empty (goal >= 80%),
  as the median of the paired rounds and best vs best. The same without the per-batch fsync
  shows the index's own work alone (fsync timing dominates and is noisy on a shared machine).
  Also: new series into existing studies spread over the whole 1M index (a worst case).
  Each run adds its records to the reused index (about +140k per run).

Goals (issue 2): lookup < 200 ms of index time, ingest at 1M >= 80% of the empty rate.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pacsctl.dicom.matching import compile_filters  # noqa: E402
from pacsctl.archive.search import find_records  # noqa: E402
from pacsctl.storage import index as index_mod  # noqa: E402
from pacsctl.storage.files import ensure_dir  # noqa: E402
from pacsctl.storage.index import Index  # noqa: E402
from pacsctl.dicom.attributes import INDEX_FIELDS  # noqa: E402

PER_SERIES, PER_STUDY, PER_PATIENT = 10, 5, 2
MARK = "bench-index.json"


def record(pop: int, i: int) -> dict:
    """Instance record number `i` of synthetic population `pop` (0: the 1M index; others: new)."""
    series = i // PER_SERIES
    study = series // PER_STUDY
    patient = study // PER_PATIENT
    root = f"1.2.826.0.1.3680043.8.498.{pop}"
    return {
        "PatientID": f"P{patient:07d}" if pop == 0 else f"N{pop}-{patient:07d}", "PatientName": f"DOE^JOHN{patient}", "PatientBirthDate": "19600101",
        "PatientSex": "M", "StudyInstanceUID": f"{root}.{study}",
        "StudyDate": f"2024{1 + study % 12:02d}{1 + study % 28:02d}", "StudyTime": "101500",
        "AccessionNumber": f"A{study:08d}", "StudyID": "1", "StudyDescription": "CT THORAX",
        "ReferringPhysicianName": "REF^DOC", "SeriesInstanceUID": f"{root}.{study}.{series}",
        "Modality": ("CT", "CT", "PT", "SR", "CT")[series % PER_STUDY], "SeriesNumber": series % PER_STUDY + 1,
        "SeriesDescription": "AXIAL 1.0", "SeriesDate": "20240101", "BodyPartExamined": "CHEST",
        "SOPInstanceUID": f"{root}.{study}.{series}.{i}",
        "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "InstanceNumber": i % PER_SERIES + 1,
        "TransferSyntaxUID": "1.2.840.10008.1.2.1", "SpecificCharacterSet": "ISO_IR 100",
        "path": f"objects/{i % 256:02x}/{i // 256 % 256:02x}/x{i}.dcm", "size": 525508, "sha256": f"{i:064x}",
    }


def open_index(root: Path) -> Index:
    return Index(root / "index", ensure_dir(root / "tmp"), INDEX_FIELDS)


def build(root: Path, count: int) -> float:
    """Synthesise `count` records into the index at `root` (large folds: it is set-up)."""
    index_mod.JOURNAL_LIMIT, saved = 50_000, index_mod.JOURNAL_LIMIT
    try:
        index = open_index(root)
        start = time.perf_counter()
        for base in range(0, count, 5000):
            index.add((record(0, i) for i in range(base, min(count, base + 5000))), durable=False)
            if base and base % 100_000 == 0:
                print(f"  built {base:,} in {time.perf_counter() - start:.0f} s", flush=True)
        index.flush()
        return time.perf_counter() - start
    finally:
        index_mod.JOURNAL_LIMIT = saved


def ingest(root: Path, pop: int, count: int, durable: bool = True) -> float:
    """records/s of adding `count` records the way Archive.ingest does (16 per durable batch).

    With `durable=False` the per-batch fdatasync is left out: what remains is the index's own
    work (journal lines, folds, shard files), which is what could grow with the index's size.
    """
    index = open_index(root)
    start = time.perf_counter()
    for base in range(0, count, 16):
        index.add([record(pop, i) for i in range(base, min(count, base + 16))], durable=durable)
    index.flush()
    return count / (time.perf_counter() - start)


def lookup_ms(root: Path, patient_ids: list[str]) -> list[float]:
    out = []
    for pid in patient_ids:
        index = open_index(root)
        flt = compile_filters({"PatientID": pid})
        start = time.perf_counter()
        rows = find_records(index, "STUDY", flt)
        out.append((time.perf_counter() - start) * 1000)
        # (earlier runs may have added series to existing studies: at least the built ones)
        assert len(rows) == PER_PATIENT and all(r["NumberOfStudyRelatedInstances"] >= PER_SERIES * PER_STUDY for r in rows), rows
    return out


def own_file_system(folder: Path, size: str) -> Path:
    """Mount (once) an ext4 image `folder/fs.img` of `size` at `folder/mnt`; return the mount."""
    folder.mkdir(parents=True, exist_ok=True)
    image, mnt = folder / "fs.img", folder / "mnt"
    mnt.mkdir(exist_ok=True)
    if os.path.ismount(mnt):
        return mnt
    if not image.exists():
        subprocess.run(["truncate", "-s", size, str(image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-N", "2000000", str(image)], check=True)  # small files: many inodes
    subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], check=True)
    print(f"(on its own ext4 file system: {image} mounted at {mnt}; `umount {mnt}` when done)")
    return mnt


def drop_caches() -> bool:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def stats(ms: list[float]) -> str:
    ms = sorted(ms)
    return f"median {statistics.median(ms):6.1f} ms  p95 {ms[int(len(ms) * 0.95) - 1]:6.1f} ms  max {ms[-1]:6.1f} ms  (n={len(ms)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "pacsctl-bench-index")
    parser.add_argument("--instances", type=int, default=1_000_000)
    parser.add_argument("--new", type=int, default=20_000, help="records added in each ingest measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating empty/1M rounds of each kind")
    parser.add_argument("--own-fs", metavar="SIZE", help="run on a loop-mounted ext4 image of SIZE (e.g. 3G; root): "
                        "syncfs then flushes only this benchmark's writes, not other processes' on a shared disk")
    args = parser.parse_args(argv)

    if args.own_fs:
        args.dir = own_file_system(args.dir, args.own_fs)
    big = args.dir / "big"
    mark = args.dir / MARK
    params = {"instances": args.instances, "shape": [PER_SERIES, PER_STUDY, PER_PATIENT], "version": 1}
    state = json.loads(mark.read_text()) if mark.exists() else {}
    if state.get("params") != params:
        shutil.rmtree(args.dir, ignore_errors=True)
        args.dir.mkdir(parents=True, exist_ok=True)
        print(f"building an index of {args.instances:,} instances in {big} ...", flush=True)
        secs = build(big, args.instances)
        state = {"params": params, "runs": 0, "build_seconds": round(secs, 1)}
        mark.write_text(json.dumps(state))
    state["runs"] += 1
    mark.write_text(json.dumps(state))
    run = state["runs"]
    n_patients = args.instances // (PER_SERIES * PER_STUDY * PER_PATIENT)
    shards = sum(1 for _ in (big / "index").rglob("*.json"))
    size = sum(p.stat().st_size for p in (big / "index").rglob("*.json"))
    print(f"index: {args.instances:,} instances, {n_patients:,} patients, {args.instances // PER_SERIES // PER_STUDY:,} studies, "
          f"{args.instances // PER_SERIES:,} series; {shards:,} shard files, {size / 2**20:.0f} MiB "
          f"(built in {state['build_seconds']} s)")

    rng = random.Random(run)
    pids = [f"P{rng.randrange(n_patients):07d}" for _ in range(200)]
    print("lookup `ls --level study -k PatientID=X` at 1M (index time):")
    print(f"  warm:                                  {stats(lookup_ms(big, pids))}")
    if drop_caches():
        cold = []
        for pid in pids[:20]:
            drop_caches()
            cold += lookup_ms(big, [pid])
        print(f"  cold (page cache dropped before each): {stats(cold)}")
    # a live writer holding 2000 journaled, not yet folded records (the most a writer keeps)
    writer = subprocess.Popen(
        [sys.executable, "-c", (
            "import sys; sys.path.insert(0, sys.argv[2])\n"
            "from pathlib import Path\nfrom benchmarks.bench_index import open_index, record\n"
            "ix = open_index(Path(sys.argv[1]))\n"
            f"ix.add([record({50 + run}, i) for i in range(1999)], durable=True)\n"
            "print('ready', flush=True); sys.stdin.readline()\n"
        ), str(big), str(Path(__file__).resolve().parent.parent)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "ready"
    print(f"  warm, 1999 unfolded journal records:   {stats(lookup_ms(big, pids[:50]))}")
    writer.stdin.write("\n")
    writer.stdin.close()
    writer.wait()

    print(f"ingest of {args.new:,} new records (16 per batch, folds every {index_mod.JOURNAL_LIMIT}), "
          f"empty and 1M alternating, {args.rounds} rounds:")
    pop = 1000 + run * 100
    summary = {}
    with tempfile.TemporaryDirectory(prefix="empty-", dir=args.dir) as tmp:
        for durable in (True, False):
            ratios, empties, bigs = [], [], []
            for rnd in range(args.rounds):
                pop += 1
                empty_rate = ingest(Path(tmp) / f"e{pop}", 1, args.new, durable)
                pop += 1
                big_rate = ingest(big, pop, args.new, durable)
                empties.append(empty_rate)
                bigs.append(big_rate)
                ratios.append(big_rate / empty_rate)
                print(f"  {'durable' if durable else 'no fsync'} round {rnd + 1}: empty {empty_rate:7.0f} rec/s   "
                      f"at 1M {big_rate:7.0f} rec/s   ratio {big_rate / empty_rate:.0%}", flush=True)
            summary[durable] = (statistics.median(ratios), max(empties), max(bigs))
    # new series into existing studies at 1M: same studies as the population, new series/instance UIDs
    extra_rate = ingest_existing(big, run, args.new, args.instances // PER_SERIES // PER_STUDY)
    print(f"  new series in existing studies at 1M (durable): {extra_rate:7.0f} rec/s "
          f"({extra_rate / summary[True][1]:.0%} of the best empty rate)")
    for durable, (median_ratio, best_empty, best_big) in summary.items():
        print(f"{'durable' if durable else 'no fsync'}: median of paired ratios {median_ratio:.0%}; best empty "
              f"{best_empty:.0f} rec/s, best at 1M {best_big:.0f} rec/s: {best_big / best_empty:.0%} (goal >= 80%)")
    return 0


def ingest_existing(root: Path, run: int, count: int, n_studies: int) -> float:
    """Add new series (10 instances each) to existing studies spread over the whole index."""
    index = open_index(root)
    rng = random.Random(1000 + run)
    base_records = []
    for s in range(count // PER_SERIES):
        study_no = rng.randrange(n_studies)
        template = record(0, study_no * PER_SERIES * PER_STUDY)
        series_uid = f"{template['StudyInstanceUID']}.9.{run}.{s}"
        for k in range(PER_SERIES):
            base_records.append({**template, "SeriesInstanceUID": series_uid, "SOPInstanceUID": f"{series_uid}.{k}",
                                 "Modality": "MR", "InstanceNumber": k + 1})
    start = time.perf_counter()
    for b in range(0, len(base_records), 16):
        index.add(base_records[b:b + 16], durable=True)
    index.flush()
    return len(base_records) / (time.perf_counter() - start)


if __name__ == "__main__":
    sys.exit(main())
