"""Benchmark `pacsctl anonymize` against dicognito on the same files in the same run, and count
the faults of both against PS3.15 Table E.1-1.

    python -m benchmarks.bench_anonymize [CORPUS_DIR] [--count 1000] [--repeat 3] [--jobs N]

The CT corpus (benchmarks/corpus.py; written to CORPUS_DIR if missing) is anonymized by
`python -m pacsctl anonymize CORPUS --out OUT --key K --json` and by
`python -m dicognito --output-directory OUT CORPUS`, interleaved over `--repeat` rounds (the
order alternating, each round sharing one load level). Times are whole processes, start-up
included; the ratio is the median of the per-round ratios (pacsctl / dicognito; goal <= 1).

Faults, counted the same way for both outputs (an output is matched to its input by the
SHA-256 of its Pixel Data, which neither tool changes): an input with no output; every element
of the input (at any depth) that a table row covers and the output shows in a way the row's
action does not allow (X: present; Z: the original value; D: absent, empty or the original; U:
absent or the original UID); every private element left; PatientIdentityRemoved not YES; no
113100 code in DeidentificationMethodCodeSequence; each of the patient's name, ID, birth date,
accession number and institution found in the output's bytes outside Pixel Data.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
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

import pydicom  # noqa: E402
from pydicom.dataset import Dataset  # noqa: E402

from benchmarks.corpus import corpus_files, write_corpus  # noqa: E402

TABLE = REPO / "pacsctl" / "anonymize" / "data" / "ps3.15-table-e1-1.csv"
KEY = "bench-anonymize-key"


def _table() -> dict[int, set[str]]:
    rows = csv.DictReader(TABLE.read_text(encoding="utf-8").splitlines())
    return {
        int(r["tag"], 16): {a.rstrip("*") for a in r["basic_profile_action"].split("/")}
        for r in rows
        if all(c in "0123456789ABCDEF" for c in r["tag"])
    }


def _pixels_key(ds: Dataset) -> str:
    return hashlib.sha256(bytes(ds.get("PixelData", b""))).hexdigest()


def _element_faults(original: Dataset, output: Dataset, rules: dict[int, set[str]]) -> int:
    faults = 0
    for elem in original:
        tag = int(elem.tag)
        allowed = rules.get(tag)
        if elem.tag.is_private:
            continue  # counted in the output
        if elem.VR == "SQ":
            if tag in output and output[tag].VR == "SQ" and "X" not in (allowed or set()):
                for before, after in zip(elem.value, output[tag].value):
                    faults += _element_faults(before, after, rules)
            elif allowed is None and tag not in output:
                faults += 0  # a sequence outside the table removed: not the table's business
            continue
        if allowed is None:
            continue
        value = output[tag].value if tag in output else None
        present = tag in output
        empty = value in (None, "", b"") or (isinstance(value, (list, tuple)) and not value)
        same = present and not empty and str(value) == str(elem.value)
        ok = (
            (not present and "X" in allowed)
            or (present and empty and "Z" in allowed)
            or (present and not empty and not same and ("D" in allowed or "U" in allowed or "Z" in allowed))
        )
        faults += 0 if ok else 1
    return faults


def _header(data: bytes) -> bytes:
    fp = io.BytesIO(data)
    pydicom.dcmread(fp, stop_before_pixels=True, force=True)
    return data[: fp.tell()]


def count_faults(inputs: list[Path], outputs: list[Path]) -> dict[str, int]:
    """Faults of one tool's outputs for `inputs` (see the module docstring), by kind."""
    rules = _table()
    by_pixels: dict[str, Path] = {}
    for path in outputs:
        by_pixels[_pixels_key(pydicom.dcmread(path, force=True))] = path
    faults = {"not written": 0, "table": 0, "private": 0, "markers": 0, "identifiers": 0}
    for path in inputs:
        original = pydicom.dcmread(path, force=True)
        found = by_pixels.get(_pixels_key(original))
        if found is None:
            faults["not written"] += 1
            continue
        data = found.read_bytes()
        output = pydicom.dcmread(io.BytesIO(data), force=True)
        faults["table"] += _element_faults(original, output, rules)
        faults["private"] += sum(1 for e in output.iterall() if e.tag.is_private)
        if output.get("PatientIdentityRemoved") != "YES":
            faults["markers"] += 1
        codes = [i.get("CodeValue") for i in output.get("DeidentificationMethodCodeSequence", [])]
        if "113100" not in codes:
            faults["markers"] += 1
        header = _header(data).upper()
        anchors = [str(original.get(k, "") or "") for k in ("PatientID", "PatientBirthDate", "AccessionNumber")]
        anchors += [p for p in str(original.get("PatientName", "")).split("^") if len(p) >= 3]
        anchors += [str(original.get("InstitutionName", "") or "")]
        faults["identifiers"] += sum(1 for a in anchors if len(a) >= 3 and a.upper().encode() in header)
    return faults


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])}... exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return wall, proc.stdout


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", type=Path, default=Path(tempfile.gettempdir()) / "corpus1k")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--jobs", type=int, default=None, help="pacsctl --jobs (default: one per core)")
    args = parser.parse_args(argv)

    files = corpus_files(args.corpus)
    if len(files) != args.count:
        files = write_corpus(args.corpus, args.count)
    total = sum(f.stat().st_size for f in files)
    env = dict(os.environ, NO_COLOR="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    jobs = ["--jobs", str(args.jobs)] if args.jobs else []
    print(f"corpus: {len(files)} instances, {total / 2**20:.1f} MiB, {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bench-anonymize-") as tmp:
        root = Path(tmp)
        subprocess.run(["cat", *map(str, files)], stdout=subprocess.DEVNULL, check=True)  # warm the cache
        times: dict[str, list[float]] = {"pacsctl": [], "dicognito": []}
        summary: dict = {}
        for round_ in range(args.repeat):
            order = ["pacsctl", "dicognito"] if round_ % 2 == 0 else ["dicognito", "pacsctl"]
            for name in order:
                out = root / f"{name}{round_}"
                if name == "pacsctl":
                    cmd = [sys.executable, "-m", "pacsctl", "anonymize", str(args.corpus), "--out", str(out),
                           "--key", KEY, "--json", *jobs]
                else:
                    cmd = [sys.executable, "-m", "dicognito", "--output-directory", str(out), str(args.corpus)]
                wall, stdout = _timed(cmd, env)
                times[name].append(wall)
                if name == "pacsctl":
                    summary = json.loads(stdout.strip().splitlines()[-1])
        last = args.repeat - 1
        ratios = [p / d for p, d in zip(times["pacsctl"], times["dicognito"])]
        print(f"{args.repeat} interleaved rounds; best times, median of per-round ratios")
        for name in ("pacsctl", "dicognito"):
            print(f"{name:10s} {min(times[name]):6.2f} s (rounds: {', '.join(f'{t:.2f}' for t in times[name])})")
        print(f"ratio pacsctl / dicognito: {statistics.median(ratios):.2f} (goal <= 1.00)")
        print(f"pacsctl summary: written {summary.get('written')}, skipped {summary.get('skipped')}, "
              f"elapsed in-process {summary.get('elapsed')} s")
        for name in ("pacsctl", "dicognito"):
            outputs = sorted((root / f"{name}{last}").rglob("*.dcm"))
            faults = count_faults(files, outputs)
            detail = ", ".join(f"{kind} {n}" for kind, n in faults.items() if n)
            print(f"{name:10s} faults: {sum(faults.values())}" + (f" ({detail})" if detail else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
