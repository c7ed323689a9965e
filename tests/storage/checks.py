"""Checks on a whole archive folder, shared by the storage, archive, import and crash tests.

- `bad_modes(root)`: every path in the archive that is readable by group/others.
- `consistency(root)`: compares the files under `objects/` with the index, read by a fresh
  process-independent `Index` (journals included), and returns every problem found.
- `run_python(code, ...)`: run a Python snippet in a child process (repo on PYTHONPATH), used
  for real separate writer processes and for kill -9 experiments.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.helpers import REPO_ROOT


def bad_modes(root: Path) -> list[str]:
    """Paths under `root` (and root itself) whose mode is not 0700 (folders) / 0600 (files)."""
    bad = []
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            bad.append(f"{path}: symbolic link inside the archive")
            continue
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) != want:
            bad.append(f"{path.relative_to(root)}: {oct(stat.S_IMODE(st.st_mode))} != {oct(want)}")
    return bad


def object_files(root: Path) -> dict[str, Path]:
    """The stored objects, by archive-relative path."""
    return {str(p.relative_to(root)): p for p in (root / "objects").rglob("*") if p.is_file()}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def consistency(root: Path) -> list[str]:
    """Every disagreement between `objects/` and the index of the archive at `root`.

    Checks: no temp/partial file under objects/, each object is indexed exactly once with its
    true size and SHA-256, each indexed instance has its file, and the study/series counts and
    ModalitiesInStudy equal what the instance records say.
    """
    from pacsctl.storage.index import Index
    from pacsctl.dicom.attributes import INDEX_FIELDS

    problems: list[str] = []
    objects = object_files(root)
    for rel in objects:
        if not rel.endswith(".dcm"):
            problems.append(f"not an object name under objects/: {rel}")
    index = Index(root / "index", root / "tmp", INDEX_FIELDS)
    instances = index.instances()
    counted = Counter(r["path"] for r in instances)
    for rel, n in counted.items():
        if n > 1:
            problems.append(f"indexed {n} times: {rel}")
    by_path = {r["path"]: r for r in instances}
    for rel, path in objects.items():
        rec = by_path.get(rel)
        if rec is None:
            problems.append(f"object not in the index: {rel}")
            continue
        if rec["size"] != path.stat().st_size or rec["sha256"] != sha256(path):
            problems.append(f"index size/sha256 wrong for {rel}")
    for rel in by_path:
        if rel not in objects:
            problems.append(f"indexed but no file: {rel}")
    per_series = Counter(r["SeriesInstanceUID"] for r in instances)
    for study in index.studies():
        series = [s for s in index.series(study_uids=[study["StudyInstanceUID"]])]
        n_inst = sum(per_series[s["SeriesInstanceUID"]] for s in series)
        if study["NumberOfStudyRelatedInstances"] != n_inst:
            problems.append(f"study {study['StudyInstanceUID']}: {study['NumberOfStudyRelatedInstances']} instances counted, {n_inst} indexed")
        if study["NumberOfStudyRelatedSeries"] != len(series):
            problems.append(f"study {study['StudyInstanceUID']}: series count wrong")
        for s in series:
            if s["NumberOfSeriesRelatedInstances"] != per_series[s["SeriesInstanceUID"]]:
                problems.append(f"series {s['SeriesInstanceUID']}: count wrong")
    return problems


def python_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_python(code: str, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `code` in a fresh interpreter (argv[1:] = args); raise with its output if it fails."""
    proc = subprocess.run([sys.executable, "-c", code, *args], env=python_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"child exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def start_python(code: str, *args: str, **kwargs) -> subprocess.Popen[str]:
    """Start `code` in a fresh interpreter without waiting (for kill -9 experiments)."""
    return subprocess.Popen([sys.executable, "-c", code, *args], env=python_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)
