"""Synthetic CT corpus for benchmarks, and `make_ct`, the CT writer tests share.

    python benchmarks/corpus.py OUT_DIR --count 1000

writes the corpus of DESIGN.md: COUNT CT instances of 512x512x16 bit (1000 -> about 504 MiB),
explicit VR little endian, deterministic UIDs and pixels, laid out as
``OUT_DIR/PAT{p}/ST{s}/SE{n}/IM{i}.dcm`` (100 instances per study, 50 per series, 2 studies
per patient). Files already present with the right size are kept, so re-running is cheap.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid

# pydicom's registered root; entropy-derived UIDs below it are deterministic and unique.
UID_PREFIX = "1.2.826.0.1.3680043.8.498."
INSTANCES_PER_SERIES = 50
SERIES_PER_STUDY = 2
STUDIES_PER_PATIENT = 2
MANIFEST = ".corpus.json"


def det_uid(*parts: object) -> str:
    """A deterministic UID derived from `parts` (same parts, same UID, on every machine)."""
    return generate_uid(prefix=UID_PREFIX, entropy_srcs=["pacsctl-corpus", *map(str, parts)])


def ct_pixels(rows: int, cols: int, seed: int) -> bytes:
    """Deterministic 16-bit CT-like pixel bytes (12 bits stored, little endian)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4096, size=(rows, cols), dtype="<u2").tobytes()


def make_ct(path: str | os.PathLike[str], *, patient_id: str = "PAT001",
            patient_name: str = "TEST^PATIENT", study_uid: str | None = None,
            series_uid: str | None = None, sop_uid: str | None = None, rows: int = 64,
            cols: int = 64, instance_number: int = 1, series_number: int = 1,
            study_date: str = "20240101", study_time: str = "120000",
            accession_number: str = "ACC001", study_description: str = "CT CHEST",
            series_description: str = "AXIAL", pixel_seed: int = 0,
            extra: dict[str, object] | None = None) -> Path:
    """Write a small valid CT Image Storage Part-10 file (explicit VR LE) and return its path.

    UIDs not given are generated at random. `extra` maps DICOM keywords to values set last
    (e.g. ``{"SpecificCharacterSet": "ISO_IR 192", "PatientName": "Müller^Hans"}``).
    Parent directories are created.
    """
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    sop_uid = sop_uid or generate_uid()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "PACSCTL_TEST"

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = study_date
    ds.SeriesDate = study_date
    ds.StudyTime = study_time
    ds.AccessionNumber = accession_number
    ds.Modality = "CT"
    ds.Manufacturer = "pacsctl"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = study_description
    ds.SeriesDescription = series_description
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.SliceThickness = "1.0"
    ds.KVP = "120"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.ImagePositionPatient = [0, 0, float(instance_number)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.FrameOfReferenceUID = det_uid("for", study_uid)
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = float(instance_number)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = rows
    ds.Columns = cols
    ds.PixelSpacing = [0.7, 0.7]
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.PixelData = ct_pixels(rows, cols, pixel_seed)
    for keyword, value in (extra or {}).items():
        setattr(ds, keyword, value)

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(out, enforce_file_format=True)
    return out


def corpus_layout(count: int) -> list[tuple[Path, dict[str, object]]]:
    """Relative path and `make_ct` arguments of each instance of a COUNT-instance corpus."""
    per_study = INSTANCES_PER_SERIES * SERIES_PER_STUDY
    items: list[tuple[Path, dict[str, object]]] = []
    for i in range(count):
        study, series = i // per_study, (i // INSTANCES_PER_SERIES) % SERIES_PER_STUDY
        patient = study // STUDIES_PER_PATIENT
        rel = Path(f"PAT{patient:03d}/ST{study:03d}/SE{series:02d}/IM{i:06d}.dcm")
        items.append((rel, {
            "patient_id": f"BENCH{patient:03d}",
            "patient_name": f"BENCH^PATIENT{patient:03d}",
            "study_uid": det_uid("study", study),
            "series_uid": det_uid("series", study, series),
            "sop_uid": det_uid("sop", i),
            "instance_number": i % INSTANCES_PER_SERIES + 1,
            "series_number": series + 1,
            "study_date": f"2024{1 + study % 12:02d}{1 + study % 28:02d}",
            "accession_number": f"BACC{study:05d}",
            "pixel_seed": i,
        }))
    return items


def corpus_files(out_dir: str | os.PathLike[str]) -> list[Path]:
    """The corpus files under `out_dir`, sorted (the order `write_corpus` made them)."""
    return sorted(Path(out_dir).glob("PAT*/ST*/SE*/IM*.dcm"))


def write_corpus(out_dir: str | os.PathLike[str], count: int = 1000, rows: int = 512,
                 cols: int = 512, force: bool = False) -> list[Path]:
    """Write (or complete) the corpus in `out_dir`; return all its files, sorted.

    Files present with the size of an earlier run of the same parameters are not rewritten.
    Each file is written to a temp name and renamed, so an interrupted run leaves no half file.
    """
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    params = {"count": count, "rows": rows, "cols": cols, "version": 1}
    manifest = root / MANIFEST
    sizes: dict[str, int] = {}
    if manifest.exists() and not force:
        recorded = json.loads(manifest.read_text())
        if recorded.get("params") == params:
            sizes = recorded.get("sizes", {})
    written: list[Path] = []
    new_sizes: dict[str, int] = {}
    for rel, kwargs in corpus_layout(count):
        target = root / rel
        key = rel.as_posix()
        if key in sizes and target.is_file() and target.stat().st_size == sizes[key]:
            new_sizes[key] = sizes[key]
            continue
        tmp = target.with_name(target.name + ".tmp")
        make_ct(tmp, rows=rows, cols=cols, **kwargs)  # type: ignore[arg-type]
        os.replace(tmp, target)
        new_sizes[key] = target.stat().st_size
        written.append(target)
    manifest.write_text(json.dumps({"params": params, "sizes": new_sizes}, indent=0))
    return [root / rel for rel, _ in corpus_layout(count)]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: write the corpus and print what it holds."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--cols", type=int, default=512)
    parser.add_argument("--force", action="store_true", help="rewrite every file")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    files = write_corpus(args.out_dir, args.count, args.rows, args.cols, args.force)
    total = sum(f.stat().st_size for f in files)
    print(f"corpus: {len(files)} files, {total / 2**20:.1f} MiB in {args.out_dir} "
          f"({time.perf_counter() - start:.1f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
