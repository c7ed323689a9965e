"""Input trees for import tests: what technicians really get on CDs and shared folders.

`messy_tree(root, testdata_dir)` builds a tree and returns the `Expected` outcome: which inputs
must be imported, quarantined and skipped, so a test can check that every file is accounted.
"""

from __future__ import annotations

import io
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.filebase import DicomFileLike
from pydicom.filewriter import write_dataset
from pydicom.uid import generate_uid

from benchmarks.corpus import make_ct


@dataclass
class Expected:
    """Origins (as reports name them) by the outcome they must get."""

    stored: set[str] = field(default_factory=set)
    quarantined: set[str] = field(default_factory=set)
    skipped: set[str] = field(default_factory=set)
    sop_uids: set[str] = field(default_factory=set)  # of the stored ones

    @property
    def files(self) -> int:
        return len(self.stored) + len(self.quarantined) + len(self.skipped)


def bare_dataset_bytes(path: Path, implicit: bool = True) -> bytes:
    """A Part-10 file's data set without preamble and File Meta (as old modalities write)."""
    ds = pydicom.dcmread(path)
    del ds.file_meta
    buffer = io.BytesIO()
    fp = DicomFileLike(buffer)
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    return buffer.getvalue()


def messy_tree(root: Path, testdata_dir: Path, n_ct: int = 12) -> Expected:
    """Build the tree under `root`; return what an import of `root` must report."""
    exp = Expected()
    study = generate_uid(prefix=None)[:40]  # room for the suffixes below within 64 characters

    def stored(path: Path, origin: str | None = None) -> None:
        exp.stored.add(origin or str(path))

    # nested CT series, some names without extension, one deep folder
    for i in range(n_ct):
        sub = root / "patient" / f"series{i % 3}" / ("deep/er" if i == 5 else "")
        name = f"IM{i:04d}" + (".dcm" if i % 2 else "")
        path = make_ct(sub / name, study_uid=study, series_uid=f"{study}.{i % 3}", sop_uid=f"{study}.{i % 3}.{i}",
                       instance_number=i, pixel_seed=i, patient_id="MESSY1")
        stored(path)
        exp.sop_uids.add(f"{study}.{i % 3}.{i}")
    # a few of pydicom's real files (compressed, big endian, implicit)
    for name in ("CT_small.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm", "rtplan.dcm", "image_dfl.dcm"):
        dest = root / "real" / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(testdata_dir / name, dest)
        stored(dest)
        exp.sop_uids.add(str(pydicom.dcmread(dest).SOPInstanceUID))
    # a zip, read in place: two CTs and a junk member
    zpath = root / "upload" / "study.zip"
    zpath.parent.mkdir(parents=True)
    with zipfile.ZipFile(zpath, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(2):
            ct = make_ct(root.parent / f"zipsrc{i}.dcm", study_uid=study, series_uid=f"{study}.9", sop_uid=f"{study}.9.{i}", patient_id="MESSY1")
            zf.write(ct, f"DICOM/IM{i}")
            stored(zpath, f"{zpath}!DICOM/IM{i}")
            exp.sop_uids.add(f"{study}.9.{i}")
        zf.writestr("DICOM/README.TXT", "burned by SuperViewer")
        exp.skipped.add(f"{zpath}!DICOM/README.TXT")
    # a data set without File Meta (no preamble), implicit VR
    bare = root / "old_modality" / "IMG0001"
    bare.parent.mkdir(parents=True)
    src = make_ct(root.parent / "baresrc.dcm", study_uid=study, series_uid=f"{study}.8", sop_uid=f"{study}.8.1", patient_id="MESSY1")
    bare.write_bytes(bare_dataset_bytes(src))
    stored(bare)
    exp.sop_uids.add(f"{study}.8.1")
    # junk a CD carries
    junk = {"autorun.inf": b"[autorun]\r\nopen=viewer.exe\r\n", "report.pdf": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + b"1" * 300,
            "viewer.exe": b"MZ\x90\x00\x03" + b"\x00" * 400, "Thumbs.db": b"\xd0\xcf\x11\xe0" + b"\x00" * 100,
            "empty.dcm": b""}
    for name, data in junk.items():
        (root / name).write_bytes(data)
        exp.skipped.add(str(root / name))
    # broken DICOM: truncated CT, pydicom's truncated files, a DICM header with garbage after it
    whole = make_ct(root.parent / "trunc_src.dcm", sop_uid=generate_uid()).read_bytes()
    (root / "broken").mkdir()
    (root / "broken" / "truncated.dcm").write_bytes(whole[: len(whole) // 2])
    exp.quarantined.add(str(root / "broken" / "truncated.dcm"))
    for name in ("MR_truncated.dcm", "rtplan_truncated.dcm"):
        shutil.copy(testdata_dir / name, root / "broken" / name)
        exp.quarantined.add(str(root / "broken" / name))
    (root / "broken" / "garbage.dcm").write_bytes(b"\x00" * 128 + b"DICM" + os.urandom(64) + b"\xff" * 40)
    exp.quarantined.add(str(root / "broken" / "garbage.dcm"))
    # a DICOMDIR met while walking a folder: not an instance
    shutil.copy(testdata_dir / "dicomdirtests" / "DICOMDIR", root / "DICOMDIR")
    exp.skipped.add(str(root / "DICOMDIR"))
    # things that cannot be read at all
    (root / "patient" / "loop").symlink_to("..")
    (root / "dangling.dcm").symlink_to(root / "gone.dcm")
    exp.skipped.add(str(root / "dangling.dcm"))
    os.mkfifo(root / "fifo.dcm")
    exp.skipped.add(str(root / "fifo.dcm"))
    return exp
