"""What became of each file `scu.store` sent is a typed `StoreFailure`, never message text
(issue 9 §2): the send command's retry rules decide on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom

from pacsctl.config import Node
from pacsctl.net import scu
from pacsctl.net.cancel import Cancellation
from pacsctl.net.scp import start_scp
from pacsctl.net.types import ScpHandlers, ScpOptions, StoreFailure, StoreRequest


def test_each_outcome_has_its_kind(ct_factory: Any, tmp_path: Path) -> None:
    refused_uid: list[str] = []

    def store(req: StoreRequest) -> int:
        return 0xA700 if req.sop_instance_uid in refused_uid else 0x0000

    (tmp_path / "t").mkdir()
    scp = start_scp(ScpHandlers(store=store),
                    ScpOptions(ae_title="RECV", host="127.0.0.1", port=0, temp_dir=tmp_path / "t"))
    try:
        node = Node("n", "RECV", "127.0.0.1", scp.port)
        good, refused = ct_factory(), ct_factory()
        refused_uid.append(str(pydicom.dcmread(refused).SOPInstanceUID))
        junk = tmp_path / "junk.dcm"
        junk.write_bytes(b"not dicom at all")
        results = {Path(r.path).name: r for r in scu.store(node, [good, refused, junk], timeout=10)}
        assert results[good.name].ok and results[good.name].failure is None
        assert results[refused.name].failure is StoreFailure.REFUSED
        assert results[refused.name].status == 0xA700
        assert results["junk.dcm"].failure is StoreFailure.UNREADABLE

        cancel = Cancellation()
        cancel.cancel()
        [stopped] = scu.store(node, [good], timeout=10, cancel=cancel)
        assert stopped.failure is StoreFailure.INTERRUPTED and not stopped.ok
    finally:
        scp.stop(graceful=False)
