"""DICOMweb speed of `pacsctl serve --web-port` against Orthanc 1.10 + its DICOMweb plugin,
same corpus, same run, the same HTTP client (httpx, keep-alive) for both.

    python benchmarks/bench_web.py [--corpus /tmp/corpus1k] [--count 1000] [--rounds 3]

1. STOW-RS of the corpus into each, empty (one request per study, bodies built beforehand).
2. Then, warm (every request made once before timing), best of `--rounds`:
   the study list (QIDO-RS /studies), `/metadata` of every study, three whole studies
   (WADO-RS, multipart, `transfer-syntax=*`, read to the end).
The first `/metadata` round is printed too (pacsctl has warmed its per-series caches after the
STOW by then), and one more round after its cache folder was removed ("cold cache": every
series built from the files on request; Orthanc's figure there is its first round).
Prints seconds and pacsctl/Orthanc ratios (lower is better) with the issue's goals: metadata
<= 0.5x, retrieval <= 1.0x, STOW <= 1.0x (at least as fast).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import pydicom  # noqa: E402

from benchmarks.corpus import corpus_files, write_corpus  # noqa: E402
from benchmarks.peers import OrthancPeer  # noqa: E402

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def start_pacsctl(archive: Path) -> tuple[subprocess.Popen[bytes], str, str]:
    """An empty archive served with --web-port 0; returns the process, base URL and a write token."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    run = [sys.executable, "-m", "pacsctl", "--archive", str(archive)]
    subprocess.run([*run, "config", "set", "ae_title", "PACSCTL"], env=env, check=True, capture_output=True)
    made = subprocess.run([*run, "token", "create", "--write", "--expires", "2h", "--json"], env=env,
                          check=True, capture_output=True)
    token = json.loads(made.stdout)["token"]
    proc = subprocess.Popen([*run, "serve", "--host", "127.0.0.1", "--port", "0", "--web-port", "0"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline().decode(errors="replace")
        found = re.search(r"DICOMweb on (http://[0-9.]+:\d+)/dicom-web", line)
        if found:
            return proc, found[1] + "/dicom-web", token
    proc.kill()
    raise SystemExit("pacsctl serve --web-port did not start")


def stow_bodies(files: list[Path]) -> list[tuple[str, bytes]]:
    """One multipart/related body per study: (content type, body)."""
    by_study: dict[str, list[Path]] = defaultdict(list)
    for path in files:
        by_study[str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)].append(path)
    bodies = []
    for paths in by_study.values():
        boundary = secrets.token_hex(16)
        chunks = []
        for path in paths:
            chunks += [f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), path.read_bytes(), b"\r\n"]
        chunks.append(f"--{boundary}--\r\n".encode())
        bodies.append((f'multipart/related; type="application/dicom"; boundary={boundary}', b"".join(chunks)))
    return bodies


def best(rounds: int, job: Callable[[], object], first: dict[str, float] | None = None) -> float:
    start = time.perf_counter()
    job()  # warm: caches filled, connections open
    if first is not None:
        first["seconds"] = time.perf_counter() - start
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        job()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(client: httpx.Client, base: str, bodies: list[tuple[str, bytes]], rounds: int,
            drop_cache: Callable[[], None] | None = None) -> dict[str, float]:
    start = time.perf_counter()
    for content_type, body in bodies:
        answer = client.post(base + "/studies", content=body, headers={"Content-Type": content_type})
        assert answer.status_code == 200, (answer.status_code, answer.text[:300])
    figures = {"stow": time.perf_counter() - start}
    studies = client.get(base + "/studies", headers={"Accept": "application/dicom+json"}).json()
    uids = sorted(s["0020000D"]["Value"][0] for s in studies)

    def study_list() -> None:
        assert len(client.get(base + "/studies", headers={"Accept": "application/dicom+json"}).json()) == len(uids)

    def metadata() -> None:
        for uid in uids:
            answer = client.get(f"{base}/studies/{uid}/metadata", headers={"Accept": "application/dicom+json"})
            assert answer.status_code == 200 and answer.content.startswith(b"[")

    def three_studies() -> None:
        for uid in uids[:3]:
            size = 0
            with client.stream("GET", f"{base}/studies/{uid}", headers={"Accept": ACCEPT_DICOM}) as answer:
                assert answer.status_code == 200, answer.status_code
                for chunk in answer.iter_raw(1 << 20):
                    size += len(chunk)
            assert size > 1 << 20

    figures["study list"] = best(rounds, study_list)
    cold: dict[str, float] = {}
    figures["metadata of every study"] = best(rounds, metadata, cold)
    figures["metadata, first request"] = cold["seconds"]
    if drop_cache is not None:
        drop_cache()
        start = time.perf_counter()
        metadata()
        figures["metadata, cold cache"] = time.perf_counter() - start
    else:
        figures["metadata, cold cache"] = cold["seconds"]
    figures["three whole studies"] = best(rounds, three_studies)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/corpus1k"))
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    write_corpus(args.corpus, args.count)
    files = corpus_files(args.corpus)[: args.count]
    bodies = stow_bodies(files)
    with tempfile.TemporaryDirectory(prefix="bench-web-") as work:
        orthanc = OrthancPeer(Path(work) / "orthanc", config={
            "Plugins": [PLUGIN], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"}}).start()
        proc, base, token = start_pacsctl(Path(work) / "archive")
        try:
            with httpx.Client(timeout=600) as client:
                theirs = measure(client, f"http://127.0.0.1:{orthanc.http_port}/dicom-web", bodies, args.rounds)
            with httpx.Client(timeout=600, headers={"Authorization": f"Bearer {token}"}) as client:
                cache = Path(work) / "archive" / "cache" / "web-metadata"
                ours = measure(client, base, bodies, args.rounds, lambda: shutil.rmtree(cache, ignore_errors=True))
        finally:
            proc.terminate()
            proc.wait(60)
            orthanc.stop()
    goals = {"stow": 1.0, "metadata of every study": 0.5, "three whole studies": 1.0}
    print(f"{len(files)} instances, {len(bodies)} studies; best of {args.rounds} warm rounds (STOW: one run)")
    print(f"{'':26} {'pacsctl s':>10} {'Orthanc s':>10} {'ratio':>7}  goal")
    for name, seconds in ours.items():
        ratio = seconds / theirs[name]
        goal = goals.get(name)
        verdict = "" if goal is None else f"<= {goal:.1f}x {'met' if ratio <= goal else 'NOT met'}"
        print(f"{name:26} {seconds:10.3f} {theirs[name]:10.3f} {ratio:6.2f}x  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
