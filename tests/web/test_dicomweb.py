"""QIDO-RS and WADO-RS against a real `pacsctl serve --web-port`, with the `dicomweb-client`
library as the client (and httpx where the test needs the raw HTTP answer)."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import httpx
import pytest
from requests import HTTPError

from tests.helpers import invoke_cli
from tests.web.conftest import WebNode


def _uids(results: list[dict], tag: str) -> set[str]:
    return {r[tag]["Value"][0] for r in results}


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_without_a_valid_token_every_dicomweb_request_is_401(web_node: WebNode) -> None:
    base, s1 = web_node.dicomweb, web_node.uids["S1"]
    for path in ("/studies", f"/studies/{s1}", f"/studies/{s1}/metadata", "/series", "/instances"):
        answer = httpx.get(base + path)
        assert answer.status_code == 401, path
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        assert "error" in answer.json()
    assert httpx.get(base + "/studies", headers=_bearer("pct_not-a-token")).status_code == 401
    assert httpx.get(base + "/studies", params={"token": "pct_wrong"}).status_code == 401
    # a revoked token stops working at the next request
    created = json.loads(invoke_cli("--archive", web_node.archive, "token", "create", "--json").stdout)
    assert httpx.get(base + "/studies", headers=_bearer(created["token"])).status_code == 200
    assert invoke_cli("--archive", web_node.archive, "token", "revoke", created["id"]).returncode == 0
    assert httpx.get(base + "/studies", headers=_bearer(created["token"])).status_code == 401
    # the viewer link's form: the token as a query parameter
    assert httpx.get(base + "/studies", params={"token": web_node.token()}).status_code == 200


def test_qido_studies_series_instances_match_as_c_find_does(web_node: WebNode) -> None:
    client, u = web_node.client(), web_node.uids
    assert _uids(client.search_for_studies(), "0020000D") == {u["S1"], u["S2"], u["S3"]}
    # PN is matched case-insensitively with wildcards, dates by range, UIDs by list
    found = client.search_for_studies(search_filters={"PatientName": "doe*"})
    assert _uids(found, "0020000D") == {u["S1"], u["S3"]}
    found = client.search_for_studies(search_filters={"StudyDate": "20240101-20241231"})
    assert _uids(found, "0020000D") == {u["S1"], u["S2"]}
    found = client.search_for_studies(search_filters={"StudyInstanceUID": f"{u['S2']}\\{u['S3']}"})
    assert _uids(found, "0020000D") == {u["S2"], u["S3"]}
    found = client.search_for_studies(search_filters={"ModalitiesInStudy": "MR"})
    assert _uids(found, "0020000D") == {u["S3"]}
    study = next(s for s in client.search_for_studies() if s["0020000D"]["Value"][0] == u["S1"])
    assert study["00201208"]["Value"] == [5] and study["00201206"]["Value"] == [2]
    assert study["00100010"]["Value"] == [{"Alphabetic": "DOE^JANE"}]
    assert study["00081190"]["Value"][0] == f"{web_node.dicomweb}/studies/{u['S1']}"
    # series of a study, instances of a series, and the level-less searches
    assert _uids(client.search_for_series(u["S1"]), "0020000E") == {u["S1a"], u["S1b"]}
    assert len(client.search_for_instances(u["S1"], u["S1a"])) == 3
    assert len(client.search_for_series(search_filters={"Modality": "CT"})) == 3
    assert len(client.search_for_instances(search_filters={"PatientID": "PA"})) == 6


def test_qido_includefield_limit_offset_and_bad_queries(web_node: WebNode) -> None:
    client, u = web_node.client(), web_node.uids
    plain = client.search_for_instances(u["S1"], u["S1a"])
    assert "00100020" not in plain[0]
    every = client.search_for_instances(u["S1"], u["S1a"], fields=["all"])
    assert every[0]["00100020"]["Value"] == ["PA"] and "path" not in every[0]
    one = client.search_for_instances(u["S1"], u["S1a"], fields=["PatientID"])
    assert one[0]["00100020"]["Value"] == ["PA"]
    numbers = [r["00200013"]["Value"][0] for r in client.search_for_instances(u["S1"], u["S1a"])]
    assert numbers == [1, 2, 3]
    page = client.search_for_instances(u["S1"], u["S1a"], limit=2, offset=1)
    assert [r["00200013"]["Value"][0] for r in page] == [2, 3]
    assert client.search_for_studies(fuzzymatching=True, search_filters={"PatientName": "ROE*"})
    headers = _bearer(web_node.token())
    for params in ({"NoSuchKeyword": "1"}, {"StudyDate": "2024-13-45"}, {"limit": "-1"},
                   {"StudyInstanceUID": "1.2.*"}):
        answer = httpx.get(web_node.dicomweb + "/studies", params=params, headers=headers)
        assert answer.status_code == 400, params
        assert answer.json()["error"]
    bad_uid = httpx.get(web_node.dicomweb + "/studies/1.2.abc/metadata", headers=headers)
    assert bad_uid.status_code == 400
    traversal = httpx.get(web_node.dicomweb + "/studies/..%2F..%2Fpacsctl.toml", headers=headers)
    assert traversal.status_code in (400, 404)


def _stored(web_node: WebNode, sop_uid: str) -> bytes:
    from pacsctl.archive.archive import Archive

    return (web_node.archive / Archive.object_relpath(sop_uid)).read_bytes()


def test_wado_returns_the_stored_bytes_of_studies_series_and_instances(web_node: WebNode) -> None:
    client, u = web_node.client(), web_node.uids
    study = client.retrieve_study(u["S1"])
    assert len(study) == 5
    series = client.retrieve_series(u["S1"], u["S1b"])
    assert {ds.SeriesInstanceUID for ds in series} == {u["S1b"]}
    sop = series[0].SOPInstanceUID
    # raw multipart: every part is the file as stored, byte for byte
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    answer = httpx.get(f"{web_node.dicomweb}/studies/{u['S1']}/series/{u['S1b']}/instances/{sop}",
                       headers={**_bearer(web_node.token()), "Accept": accept})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    boundary = answer.headers["content-type"].split("boundary=")[1].encode()
    part = answer.content.split(b"--" + boundary)[1]
    head, _, body = part.partition(b"\r\n\r\n")
    assert body[:-2] == _stored(web_node, sop)
    assert int(answer.headers["content-length"]) == len(answer.content)
    instance = client.retrieve_instance(u["S1"], u["S1b"], sop)
    assert hashlib.sha256(instance.PixelData).digest() == hashlib.sha256(series[0].PixelData).digest()
    # something not dicom asked for: 406; an absent study: 404
    headers = {**_bearer(web_node.token()), "Accept": "image/png"}
    assert httpx.get(f"{web_node.dicomweb}/studies/{u['S1']}", headers=headers).status_code == 406
    with pytest.raises(HTTPError) as failed:
        client.retrieve_study("1.2.3.4.5")
    assert failed.value.response.status_code == 404


def test_metadata_has_bulk_data_uris_etags_and_gzip(web_node: WebNode) -> None:
    client, u = web_node.client(), web_node.uids
    study = client.retrieve_study_metadata(u["S1"])
    assert len(study) == 5
    first = study[0]
    assert "BulkDataURI" in first["7FE00010"] and "InlineBinary" not in first["7FE00010"]
    assert first["00280010"]["Value"] == [64]
    series = client.retrieve_series_metadata(u["S1"], u["S1a"])
    assert [m["00200013"]["Value"][0] for m in series] == [1, 2, 3]
    sop = series[1]["00080018"]["Value"][0]
    assert client.retrieve_instance_metadata(u["S1"], u["S1a"], sop)["00080018"]["Value"] == [sop]
    url = f"{web_node.dicomweb}/studies/{u['S1']}/metadata"
    headers = _bearer(web_node.token())
    answer = httpx.get(url, headers=headers)
    assert answer.headers["content-type"] == "application/dicom+json"
    etag = answer.headers["etag"]
    assert httpx.get(url, headers={**headers, "If-None-Match": etag}).status_code == 304
    raw = httpx.get(url, headers={**headers, "Accept-Encoding": "gzip"}).read()
    with httpx.stream("GET", url, headers={**headers, "Accept-Encoding": "gzip"}) as streamed:
        assert streamed.headers["content-encoding"] == "gzip"
        compressed = b"".join(streamed.iter_raw())
    assert json.loads(gzip.decompress(compressed)) == json.loads(raw)
    # the cache is private, like everything in the archive
    cached = list((web_node.archive / "cache" / "web-metadata").glob("*/*.json"))
    assert cached and all(p.stat().st_mode & 0o077 == 0 for p in cached)


def test_metadata_follows_a_series_that_changed(web_node: WebNode, tmp_path: Path) -> None:
    from benchmarks.corpus import make_ct

    client, u = web_node.client(), web_node.uids
    url = f"{web_node.dicomweb}/studies/{u['S2']}/series/{u['S2a']}/metadata"
    headers = _bearer(web_node.token())
    before = httpx.get(url, headers=headers)
    assert len(before.json()) == 2
    make_ct(tmp_path / "new.dcm", patient_id="PB", patient_name="ROE^RICHARD", study_uid=u["S2"],
            series_uid=u["S2a"], instance_number=3, study_date="20240315")
    assert invoke_cli("--archive", web_node.archive, "import", tmp_path / "new.dcm").returncode == 0
    after = httpx.get(url, headers={**headers, "If-None-Match": before.headers["etag"]})
    assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
    assert len(after.json()) == 3
    assert len(client.search_for_instances(u["S2"], u["S2a"])) == 3


def test_a_study_scoped_token_sees_only_its_study(web_node: WebNode) -> None:
    u = web_node.uids
    client = web_node.client(web_node.token("--study", u["S1"]))
    assert _uids(client.search_for_studies(), "0020000D") == {u["S1"]}
    assert _uids(client.search_for_studies(search_filters={"PatientID": "PA"}), "0020000D") == {u["S1"]}
    assert _uids(client.search_for_series(search_filters={"Modality": "CT"}), "0020000E") == {u["S1a"], u["S1b"]}
    assert len(client.retrieve_study(u["S1"])) == 5
    for call in (
        lambda: client.retrieve_study(u["S2"]),
        lambda: client.retrieve_study_metadata(u["S3"]),
        lambda: client.retrieve_series(u["S2"], u["S2a"]),
    ):
        with pytest.raises(HTTPError) as failed:
            call()
        assert failed.value.response.status_code == 404
    assert client.search_for_series(u["S2"]) == []
    patient = web_node.client(web_node.token("--patient", "PB"))
    assert _uids(patient.search_for_studies(), "0020000D") == {u["S2"]}
    # read-only by default: storing is refused
    answer = httpx.post(web_node.dicomweb + "/studies", content=b"", headers={
        **_bearer(web_node.token()), "Content-Type": 'multipart/related; type="application/dicom"; boundary=x'})
    assert answer.status_code == 403


def test_every_web_access_is_audited_without_patient_data(web_node: WebNode) -> None:
    created = json.loads(invoke_cli("--archive", web_node.archive, "token", "create", "--json").stdout)
    client = web_node.client(created["token"])
    client.search_for_studies(search_filters={"PatientName": "DOE*"})
    client.retrieve_study_metadata(web_node.uids["S1"])
    result = invoke_cli("--archive", web_node.archive, "audit", "--event", "web", "--json")
    assert result.returncode == 0, result.stderr
    mine = [json.loads(line) for line in result.stdout.splitlines() if created["id"] in line]
    assert {r["path"] for r in mine} >= {"/dicom-web/studies", f"/dicom-web/studies/{web_node.uids['S1']}/metadata"}
    assert all(r["peer"] == "127.0.0.1" and r["status"] == "200" for r in mine)
    log = (web_node.archive / "audit.log").read_text()
    assert "DOE" not in log and "ROE" not in log and created["token"] not in log


def test_token_list_shows_no_secret_and_the_store_holds_only_hashes(web_node: WebNode) -> None:
    created = json.loads(invoke_cli("--archive", web_node.archive, "token", "create", "--study",
                                    web_node.uids["S1"], "--write", "--expires", "30m", "--note",
                                    "ward 3", "--json").stdout)
    assert set(created) == {"token", "id", "expires"}
    listed = [json.loads(line) for line in invoke_cli("--archive", web_node.archive, "token", "list",
                                                      "--json").stdout.splitlines()]
    mine = next(t for t in listed if t["id"] == created["id"])
    assert mine["studies"] == [web_node.uids["S1"]] and mine["write"] and mine["note"] == "ward 3"
    assert "sha256" not in mine and created["token"] not in json.dumps(listed)
    stored = (web_node.archive / "web-tokens.json")
    assert created["token"] not in stored.read_text() and stored.stat().st_mode & 0o077 == 0
    bad = invoke_cli("--archive", web_node.archive, "token", "create", "--expires", "yesterday")
    assert bad.returncode == 2 and "error:" in bad.stderr
    assert invoke_cli("--archive", web_node.archive, "token", "revoke", "tok-nope").returncode == 2


def _instance_url(web_node: WebNode, series: str = "S1a") -> tuple[str, str]:
    u = web_node.uids
    sop = web_node.client().search_for_instances(u["S1"], u[series])[0]["00080018"]["Value"][0]
    return f"{web_node.dicomweb}/studies/{u['S1']}/series/{u[series]}/instances/{sop}", sop


def test_rendered_and_thumbnails_come_from_the_shared_renderer(web_node: WebNode) -> None:
    import io

    import pydicom
    from PIL import Image

    from pacsctl.render import Window, encode, render_frame

    url, sop = _instance_url(web_node)
    headers = _bearer(web_node.token())
    png = httpx.get(url + "/rendered", params={"window": "40,400"}, headers={**headers, "Accept": "image/png"})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    expected = render_frame(pydicom.dcmread(io.BytesIO(_stored(web_node, sop))), 0, Window(40, 400))
    assert Image.open(io.BytesIO(png.content)).tobytes() == expected.tobytes()
    other = httpx.get(url + "/frames/1/rendered", params={"window": "1000,100"},
                      headers={**headers, "Accept": "image/png"})
    assert other.content != png.content and other.content == encode(
        render_frame(pydicom.dcmread(io.BytesIO(_stored(web_node, sop))), 0, Window(1000, 100)))
    jpeg = httpx.get(url + "/rendered", params={"viewport": "32,32"}, headers=headers)
    assert jpeg.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(jpeg.content)).size == (32, 32)
    u = web_node.uids
    for path in (f"/studies/{u['S1']}/thumbnail", f"/studies/{u['S1']}/series/{u['S1b']}/thumbnail"):
        thumb = httpx.get(web_node.dicomweb + path, headers=headers)
        assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size[0] <= 128
    assert httpx.get(url + "/frames/2/rendered", headers=headers).status_code == 404
    assert httpx.get(url + "/rendered", params={"window": "x"}, headers=headers).status_code == 400


def test_frames_bulk_data_and_ranges(web_node: WebNode) -> None:
    import pydicom

    url, sop = _instance_url(web_node)
    stored = pydicom.dcmread(web_node.archive / _relpath(sop))
    client = web_node.client()
    u = web_node.uids
    frames = client.retrieve_instance_frames(u["S1"], u["S1a"], sop, frame_numbers=[1])
    assert frames == [stored.PixelData]
    bulk = client.retrieve_bulkdata(f"{url}/bulkdata/7FE00010")
    assert bulk == [stored.PixelData]
    headers = _bearer(web_node.token())
    part = httpx.get(f"{url}/bulkdata/7FE00010", headers={**headers, "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == stored.PixelData[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(stored.PixelData)}"
    whole = _stored(web_node, sop)
    single = httpx.get(url, headers={**headers, "Accept": "application/dicom", "Range": "bytes=-64"})
    assert single.status_code == 206 and single.content == whole[-64:]
    assert httpx.get(url + "/frames/9", headers=headers).status_code == 404
    assert httpx.get(url + "/frames/0,x", headers=headers).status_code == 400
    assert httpx.get(url + "/bulkdata/nothex!", headers=headers).status_code in (400, 404)


def _relpath(sop: str) -> str:
    from pacsctl.archive.archive import Archive

    return Archive.object_relpath(sop)
