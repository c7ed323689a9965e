"""`pacsctl migrate` Orthanc -> Orthanc against a plain DCMTK `movescu` loop, same studies, same run.

    python benchmarks/bench_migrate.py [--studies 100] [--per-study 10] [--corpus DIR] [--rounds 1]

A SOURCE Orthanc is loaded (DCMTK storescu) with STUDIES studies of PER-STUDY CT instances
(512x512x16 bit, 2 series each; 100 x 10 = the 1000-instance corpus of DESIGN.md). Each round
starts two fresh, empty DEST Orthancs that SOURCE knows, then times
- the baseline: one `/usr/bin/movescu` per study (STUDY level, by StudyInstanceUID) into DEST1,
  trusting its final status as hand-rolled loops do;
- `python -m pacsctl migrate SOURCE DEST2` (a fresh archive: inventory, per-study listing at
  both ends, C-MOVE, proof by IMAGE-level C-FIND, ledger fsyncs), process start included.
Prints both wall times and the ratio migrate/movescu (the goal is <= 1.3). Noisy machines:
only the ratio of one run means anything.
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.corpus import det_uid, make_ct  # noqa: E402
from benchmarks.peers import DCMTK_BIN, OrthancPeer, dcmtk_env, time_storescu  # noqa: E402


def write_studies(root: Path, studies: int, per_study: int) -> list[Path]:
    """STUDIES x PER-STUDY CT files (2 series per study) under `root`, reused when present."""
    files = []
    for s in range(studies):
        for i in range(per_study):
            path = root / f"ST{s:03d}" / f"IM{i:03d}.dcm"
            if not path.is_file():
                tmp = path.with_name(path.name + ".tmp")
                make_ct(tmp, rows=512, cols=512, patient_id=f"MIGB{s // 2:03d}", study_uid=det_uid("mst", s),
                        series_uid=det_uid("mse", s, i % 2), sop_uid=det_uid("msop", s, i),
                        instance_number=i + 1, series_number=i % 2 + 1, pixel_seed=s * 1000 + i,
                        study_date=f"2024{1 + s % 12:02d}{1 + s % 28:02d}")
                os.replace(tmp, path)
            files.append(path)
    return files


def time_movescu_loop(source: OrthancPeer, dest_aet: str, study_uids: list[str]) -> float:
    """Wall seconds for one DCMTK movescu per study."""
    start = time.perf_counter()
    for uid in study_uids:
        subprocess.run([str(DCMTK_BIN / "movescu"), "-S", "-aet", "BENCH", "-aec", source.aet, "-aem", dest_aet,
                        "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}", "127.0.0.1",
                        str(source.dicom_port)], env=dcmtk_env(), check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def time_migrate(source: OrthancPeer, dest: OrthancPeer, archive: Path) -> tuple[float, dict[str, object]]:
    """Wall seconds for `pacsctl migrate` (process start included), and its summary record."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pacsctl", "--archive", str(archive), "migrate",
                           f"{source.aet}@127.0.0.1:{source.dicom_port}", f"{dest.aet}@127.0.0.1:{dest.dicom_port}",
                           "--json"], env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"migrate failed ({proc.returncode}): {proc.stderr[-1000:]}")
    return elapsed, json.loads(proc.stdout.splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=100)
    parser.add_argument("--per-study", type=int, default=10)
    parser.add_argument("--corpus", type=Path, default=Path(tempfile.gettempdir()) / "pacsctl-bench-migrate")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    files = write_studies(args.corpus, args.studies, args.per_study)
    study_uids = [det_uid("mst", s) for s in range(args.studies)]
    with tempfile.TemporaryDirectory(prefix="bench-migrate-") as tmp:
        work = Path(tmp)
        with OrthancPeer(work / "source", aet="SOURCE") as source:
            time_storescu(files, source.dicom_port, called_aet=source.aet)
            assert source.instance_count() == len(files)
            baseline, ours = [], []
            for round_no in range(args.rounds):
                with (OrthancPeer(work / f"d1-{round_no}", aet="DEST1") as dest1,
                      OrthancPeer(work / f"d2-{round_no}", aet="DEST2") as dest2):
                    source.add_modality("dest1", dest1.aet, "127.0.0.1", dest1.dicom_port)
                    source.add_modality("dest2", dest2.aet, "127.0.0.1", dest2.dicom_port)
                    baseline.append(time_movescu_loop(source, dest1.aet, study_uids))
                    seconds, summary = time_migrate(source, dest2, work / f"archive-{round_no}")
                    ours.append(seconds)
                    assert dest1.instance_count() == dest2.instance_count() == len(files)
                    assert summary["moved"] == args.studies and summary["instances"] == len(files), summary
                    print(f"round {round_no + 1}: movescu loop {baseline[-1]:.2f} s, pacsctl migrate "
                          f"{seconds:.2f} s, ratio {seconds / baseline[-1]:.2f}x", file=sys.stderr)
    best_b, best_o = min(baseline), min(ours)
    print(f"{args.studies} studies / {len(files)} CT instances, Orthanc -> Orthanc")
    print(f"  movescu loop (DCMTK, trusts the final status): {best_b:.2f} s")
    print(f"  pacsctl migrate (listed, moved, proven UID by UID): {best_o:.2f} s")
    print(f"  ratio migrate/movescu: {best_o / best_b:.2f}x (best of {args.rounds}; median "
          f"{statistics.median(ours) / statistics.median(baseline):.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
