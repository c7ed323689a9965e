"""`attach`: a PDF or CDA filed with a study as Encapsulated PDF/CDA Storage through the
archive's ingest; `export --format native` and DCMTK's dcm2pdf give back the identical file."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
from PIL import Image, ImageDraw
from pydicom import dcmread

from pacsctl.archive.archive import Archive
from pacsctl.export.formats import ExportFormat
from pacsctl.export.run import ExportOptions, export
from pacsctl.ingest.documents import ENCAPSULATED_PDF, attach
from tests.helpers import invoke_cli, require_tool, run_dcmtk

CDA = b"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3"><title>Report</title></ClinicalDocument>
"""


def _pdf(path: Path, text: str = "CT report", odd: bool = True) -> Path:
    """A real PDF (Pillow writes one), of odd length when `odd` (the padding case)."""
    image = Image.new("RGB", (200, 100), "white")
    ImageDraw.Draw(image).text((10, 40), text, fill="black")
    buffer = io.BytesIO()
    image.save(buffer, "PDF")
    data = buffer.getvalue()
    if (len(data) % 2 == 1) != odd:
        data += b"\n"  # after %%EOF: still a valid PDF
    path.write_bytes(data)
    return path


def _study(archive: Archive, patient: str = "P1") -> dict:
    return next(r for r in archive.index.instances() if r.get("PatientID") == patient)


def test_attach_stores_a_document_instance_in_a_new_series_of_the_study(archive: Archive, tmp_path: Path) -> None:
    pdf = _pdf(tmp_path / "report.pdf")
    study = _study(archive)
    result = invoke_cli(
        "--archive", str(archive.root), "attach", str(pdf), "--study", study["StudyInstanceUID"],
        "--title", "CT report", "--json",
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["status"] == "stored"
    [record] = [r for r in archive.index.instances() if r["SOPInstanceUID"] == summary["SOPInstanceUID"]]
    assert record["StudyInstanceUID"] == study["StudyInstanceUID"] and record["Modality"] == "DOC"
    assert record["SeriesInstanceUID"] not in {r["SeriesInstanceUID"] for r in archive.index.instances() if r is not record and r["SOPClassUID"] != ENCAPSULATED_PDF}
    ds = dcmread(archive.path_of(record["path"]))
    data = pdf.read_bytes()
    assert ds.SOPClassUID == ENCAPSULATED_PDF and ds.MIMETypeOfEncapsulatedDocument == "application/pdf"
    assert ds.PatientID == "P1" and ds.PatientName == dcmread(archive.path_of(study["path"])).PatientName
    assert ds.EncapsulatedDocumentLength == len(data) and len(data) % 2 == 1
    assert bytes(ds.EncapsulatedDocument) == data + b"\0" and ds.DocumentTitle == "CT report"


def test_export_native_writes_the_identical_pdf_back(archive: Archive, tmp_path: Path) -> None:
    study = _study(archive)
    pdfs = [_pdf(tmp_path / "odd.pdf", odd=True), _pdf(tmp_path / "even.pdf", "even", odd=False)]
    for pdf in pdfs:
        attach(archive, pdf, study["StudyInstanceUID"])
    (tmp_path / "report.xml").write_bytes(CDA)
    attach(archive, tmp_path / "report.xml", study["StudyInstanceUID"])
    dest = tmp_path / "out"
    report = export(archive, dest, {"StudyInstanceUID": study["StudyInstanceUID"]}, ExportOptions(format=ExportFormat.NATIVE))
    assert report.ok and report.summary.exported == 4 + 3
    written = sorted(p.read_bytes() for p in dest.rglob("*.pdf"))
    assert written == sorted(p.read_bytes() for p in pdfs)
    assert [p.read_bytes() for p in dest.rglob("*.xml")] == [CDA]
    assert len(list(dest.rglob("*.dcm"))) == 4  # the images as archived


def test_attach_refuses_what_is_not_a_document_or_an_unknown_study(archive: Archive, tmp_path: Path) -> None:
    junk = tmp_path / "notes.txt"
    junk.write_text("hello")
    study = _study(archive)["StudyInstanceUID"]
    result = invoke_cli("--archive", str(archive.root), "attach", str(junk), "--study", study)
    assert result.returncode == 2 and "neither a PDF" in result.stderr
    pdf = _pdf(tmp_path / "r.pdf")
    result = invoke_cli("--archive", str(archive.root), "attach", str(pdf), "--study", "1.2.3.4")
    assert result.returncode == 2 and "no study 1.2.3.4" in result.stderr


@pytest.mark.interop
@pytest.mark.parametrize("odd", [True, False])
def test_dcm2pdf_gives_back_the_identical_pdf_and_dciodvfy_finds_no_error(
    archive: Archive, tmp_path: Path, odd: bool
) -> None:
    pdf = _pdf(tmp_path / "report.pdf", odd=odd)
    attached = attach(archive, pdf, _study(archive)["StudyInstanceUID"])
    stored = archive.path_of(attached.result.path)
    run_dcmtk("dcm2pdf", str(stored), str(tmp_path / "back.pdf"))
    assert (tmp_path / "back.pdf").read_bytes() == pdf.read_bytes()
    check = subprocess.run([require_tool("dciodvfy"), str(stored)], capture_output=True, text=True)
    assert "Error" not in check.stdout + check.stderr, check.stdout + check.stderr
