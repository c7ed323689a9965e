"""Orthanc's DICOMweb plugin with pacsctl configured as a remote DICOMweb server: Orthanc
searches pacsctl (QIDO-RS), retrieves a study from it (WADO-RS) and stores into it (STOW-RS),
an independent implementation of both sides of PS3.18."""

from __future__ import annotations

import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom

from benchmarks.corpus import make_ct
from benchmarks.peers import OrthancPeer
from pacsctl.archive.archive import Archive
from tests.helpers import missing_peer
from tests.web.conftest import WebNode, web_node  # noqa: F401 - the module's node

PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


def test_orthanc_searches_retrieves_from_and_stores_into_pacsctl(
    web_node: WebNode, orthanc_factory: Callable[..., OrthancPeer], tmp_path: Path
) -> None:
    if not Path(PLUGIN).is_file():
        missing_peer(f"Orthanc's DICOMweb plugin not found: {PLUGIN}")
    u = web_node.uids
    token = web_node.token("--write")
    orthanc = orthanc_factory(config={
        "Plugins": [PLUGIN],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Servers": {
            "pacsctl": {"Url": web_node.dicomweb + "/", "HttpHeaders": {"Authorization": f"Bearer {token}"}}}},
    })
    assert "pacsctl" in orthanc.rest("/dicom-web/servers")

    studies: Any = orthanc.rest("/dicom-web/servers/pacsctl/qido", "POST", {"Uri": "/studies"})
    # Orthanc answers in its own "full" format: {"Name", "Value" (a string), "vr", ...}
    assert {s["0020000D"]["Value"] for s in studies} == {u["S1"], u["S2"], u["S3"]}
    assert {s["00100010"].get("Value") for s in studies} == {"DOE^JANE", "ROE^RICHARD"}

    orthanc.rest("/dicom-web/servers/pacsctl/retrieve", "POST", {"Resources": [{"Study": u["S1"]}]})
    assert orthanc.instance_count() == 5
    for orthanc_id in orthanc.rest("/instances"):
        data = orthanc.rest(f"/instances/{orthanc_id}/file")
        sop = pydicom.dcmread(io.BytesIO(data)).SOPInstanceUID
        assert data == (web_node.archive / Archive.object_relpath(sop)).read_bytes()  # byte for byte

    new = make_ct(tmp_path / f"{uuid.uuid4().hex}.dcm", patient_id="PORTH", patient_name="VIA^ORTHANC")
    uploaded = orthanc.upload(new)
    orthanc.rest("/dicom-web/servers/pacsctl/stow", "POST", {"Resources": [uploaded["ParentStudy"]]})
    ds = pydicom.dcmread(new)
    stored = web_node.archive / Archive.object_relpath(ds.SOPInstanceUID)
    assert pydicom.dcmread(stored).SOPInstanceUID == ds.SOPInstanceUID
    found = web_node.client().search_for_studies(search_filters={"PatientID": "PORTH"})
    assert [s["0020000D"]["Value"][0] for s in found] == [ds.StudyInstanceUID]
