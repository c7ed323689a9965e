"""`send --decompress never|lossless|lossy` (issue 11), like dcmsend's policy: by default
(lossless) a lossless-compressed file is decompressed for a peer that takes only
uncompressed, a lossy one is not (it fails on its own, with the reason, rather than arrive
looking like an original); `never` decompresses nothing; `lossy` anything.

The peer: a plain pynetdicom storage SCP on loopback that accepts only uncompressed syntaxes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, _config, evt

import pacsctl.net.setup  # noqa: F401  (sets pynetdicom's accept-anything first: the fixture undoes it)
from tests.helpers import TESTDATA_DIR, invoke_cli

LOSSLESS = ["MR_small_RLE.dcm", "MR_small_jpeg_ls_lossless.dcm"]
LOSSY = ["SC_rgb_jpeg_dcmtk.dcm", "JPEGLSNearLossless_08.dcm"]  # JPEG Baseline, JPEG-LS near-lossless
PLAIN = ["CT_small.dcm"]  # explicit VR little endian: sent as stored under every policy


@pytest.fixture
def uncompressed_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, list[str]]]:
    """(node spec, the transfer syntax of each C-STORE received) of a peer taking only
    uncompressed syntaxes."""
    # pacsctl.net switches pynetdicom to accept-anything for its listener; this peer must not.
    monkeypatch.setattr(_config, "UNRESTRICTED_STORAGE_SERVICE", False)
    got: list[str] = []  # (two of pydicom's files share a SOP Instance UID)

    def on_store(event: evt.Event) -> int:
        got.append(str(event.context.transfer_syntax))
        return 0

    ae = AE(ae_title="PLAIN")
    for cx in StoragePresentationContexts:
        ae.add_supported_context(cx.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield f"PLAIN@127.0.0.1:{server.server_address[1]}", got
    finally:
        server.shutdown()


def _send(spec: str, names: list[str], *args: str) -> tuple[int, dict[str, str], dict]:
    """Exit code, {file name: failure reason}, summary."""
    proc = invoke_cli("send", spec, *(str(TESTDATA_DIR / n) for n in names), "--json", *args)
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    failed = {Path(r["path"]).name: r["reason"] for r in records[:-1] if r["status"] == "failed"}
    return proc.returncode, failed, records[-1]


def test_default_decompresses_lossless_only(uncompressed_only: tuple[str, list[str]],
                                            archive_dir: Path) -> None:
    spec, got = uncompressed_only
    code, failed, summary = _send(spec, LOSSLESS + LOSSY + PLAIN)
    assert code == 3 and set(failed) == set(LOSSY), failed
    assert all("lossy-compressed" in why and "--decompress lossy" in why for why in failed.values())
    assert (summary["sent"], summary["failed"]) == (3, 2)
    assert set(got) <= {ExplicitVRLittleEndian, ImplicitVRLittleEndian} and len(got) == 3


def test_never_and_lossy(uncompressed_only: tuple[str, list[str]], archive_dir: Path) -> None:
    spec, got = uncompressed_only
    code, failed, _ = _send(spec, LOSSLESS + PLAIN, "--decompress", "never")
    assert code == 3 and set(failed) == set(LOSSLESS), failed
    assert all("--decompress lossless or lossy" in why for why in failed.values())
    assert len(got) == 1  # the uncompressed file went as stored
    code, failed, summary = _send(spec, LOSSY, "--decompress", "lossy")
    assert code == 0 and not failed and summary["sent"] == 2
    assert len(got) == 3
