"""The SCU commands reach a TLS-only pacsctl node through the node's stored TLS settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pacsctl.archive.archive import Archive
from pacsctl.node.service import serve
from pacsctl.net.types import ScpOptions, TlsOptions
from tests.helpers import run_cli
from tests.net.conftest import tls_material  # noqa: F401  (fixture: a throwaway CA and certs)


def test_tls_node_echo_send_query_get(tls_material: dict[str, str], ct_factory: Any,  # noqa: F811
                                      tmp_path: Path, archive_dir: Path) -> None:
    peer_archive = Archive.open(tmp_path / "peer")
    tls = TlsOptions(cert=tls_material["server_cert"], key=tls_material["server_key"],
                     ca=tls_material["ca"])  # client certificates required
    node = serve(peer_archive, ScpOptions(ae_title="SECURE", host="127.0.0.1", port=0, tls=tls,
                                          temp_dir=peer_archive.tmp_dir))
    try:
        added = run_cli("nodes", "add", "secure", "--aet", "SECURE", "--host", "127.0.0.1",
                        "--port", str(node.port), "--tls", "--tls-ca", tls_material["ca"],
                        "--tls-cert", tls_material["client_cert"], "--tls-key", tls_material["client_key"])
        assert added.returncode == 0, added.stderr
        assert run_cli("echo", "secure").returncode == 0
        files = ct_factory.series(2, patient_id="TLS1")
        sent = run_cli("send", "secure", *files, "--json")
        assert sent.returncode == 0, sent.stderr
        found = [json.loads(line) for line in run_cli("query", "secure", "--json").stdout.splitlines()]
        assert [r["PatientID"] for r in found] == ["TLS1"]
        got = run_cli("get", "secure", "-k", "PatientID=TLS1", "--json")
        assert got.returncode == 0, got.stderr
        assert json.loads(got.stdout.splitlines()[-1])["stored"] == 2
        # The same node without TLS: the listener refuses plain TCP.
        plain = run_cli("echo", f"SECURE@127.0.0.1:{node.port}", "--timeout", "5")
        assert plain.returncode == 4
    finally:
        node.stop(graceful=False, timeout=10)


def test_tls_checks_the_host_name_unless_the_node_says_not(
        tls_material: dict[str, str], tmp_path: Path, archive_dir: Path) -> None:  # noqa: F811
    """A certificate from the right CA but for another host is refused by default (item 11);
    `--tls-no-hostname-check` accepts it for that node only, and `nodes list` says so."""
    peer_archive = Archive.open(tmp_path / "peer")
    elsewhere = TlsOptions(cert=tls_material["elsewhere_cert"], key=tls_material["elsewhere_key"])
    right = TlsOptions(cert=tls_material["server_cert"], key=tls_material["server_key"])
    wrong_node = serve(peer_archive, ScpOptions(ae_title="SECURE", host="127.0.0.1", port=0,
                                                tls=elsewhere, temp_dir=peer_archive.tmp_dir))
    right_node = serve(peer_archive, ScpOptions(ae_title="SECURE", host="127.0.0.1", port=0,
                                                tls=right, temp_dir=peer_archive.tmp_dir))
    try:
        def add(name: str, host: str, port: int, *extra: str) -> None:
            proc = run_cli("nodes", "add", name, "--aet", "SECURE", "--host", host, "--port",
                           str(port), "--tls", "--tls-ca", tls_material["ca"], *extra)
            assert proc.returncode == 0, proc.stderr

        add("wrongname", "127.0.0.1", wrong_node.port)
        refused = run_cli("echo", "wrongname", "--timeout", "10")
        assert refused.returncode == 4, refused.stderr
        assert "error: TLS handshake with SECURE@127.0.0.1" in refused.stderr
        assert "Hostname mismatch" in refused.stderr or "IP address mismatch" in refused.stderr
        add("lab", "127.0.0.1", wrong_node.port, "--tls-no-hostname-check")
        add("byip", "127.0.0.1", right_node.port)
        add("byname", "localhost", right_node.port)
        for name in ("lab", "byip", "byname"):
            proc = run_cli("echo", name, "--timeout", "10")
            assert proc.returncode == 0, (name, proc.stderr)
        listed = {r["name"]: r for r in map(json.loads, run_cli("nodes", "list", "--json").stdout.splitlines())}
        assert listed["lab"]["tls_no_hostname_check"] is True
        assert listed["wrongname"]["tls_no_hostname_check"] is False
        table = run_cli("nodes", "list").stdout
        assert "no host name check" in next(line for line in table.splitlines() if "lab" in line)
    finally:
        wrong_node.stop(graceful=False, timeout=10)
        right_node.stop(graceful=False, timeout=10)


def test_a_node_moving_to_a_tls_destination_checks_its_host_name(
        tls_material: dict[str, str], ct_factory: Any, tmp_path: Path, archive_dir: Path) -> None:  # noqa: F811
    """`serve` as a C-MOVE source opens the sub-association to a TLS destination with the
    destination's host name checked, unless that node has `tls_no_hostname_check`."""
    from pacsctl.config import Node

    ct_factory.series(2, patient_id="TLSMOVE")
    source_archive = Archive.open(tmp_path / "source")
    source_archive.ingest([(f.read_bytes(), str(f)) for f in sorted(ct_factory.directory.rglob("*.dcm"))])
    source = serve(source_archive, ScpOptions(ae_title="SOURCE", host="127.0.0.1", port=0,
                                              temp_dir=source_archive.tmp_dir))
    targets = {}
    for name, cert in (("right", "server"), ("wrong", "elsewhere")):
        archive = Archive.open(tmp_path / name)
        tls = TlsOptions(cert=tls_material[f"{cert}_cert"], key=tls_material[f"{cert}_key"])
        targets[name] = (archive, serve(archive, ScpOptions(ae_title=name.upper(), host="127.0.0.1", port=0,
                                                            tls=tls, temp_dir=archive.tmp_dir)))
    try:
        def destination(name: str, no_check: bool = False) -> None:
            source_archive.config.nodes[name] = Node(
                name, name.upper(), "127.0.0.1", targets[name][1].port, tls=True,
                tls_ca=tls_material["ca"], tls_no_hostname_check=no_check)
            source_archive.save_config()

        def move(to: str) -> Any:
            return run_cli("move", f"SOURCE@127.0.0.1:{source.port}", "--to", to,
                           "-k", "PatientID=TLSMOVE", "--json")

        destination("right")
        destination("wrong")
        assert move("RIGHT").returncode == 0
        assert len(targets["right"][0].index.instances()) == 2
        assert move("WRONG").returncode != 0
        assert not targets["wrong"][0].index.instances()
        destination("wrong", no_check=True)
        assert move("WRONG").returncode == 0
        assert len(targets["wrong"][0].index.instances()) == 2
    finally:
        for _, node in targets.values():
            node.stop(graceful=False, timeout=10)
        source.stop(graceful=False, timeout=10)
