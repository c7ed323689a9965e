"""A route that de-identifies on the way out (`route add --anonymize --key-file`)."""

from __future__ import annotations

import json

from pacsctl.routing.forwarder import run_once
from tests.helpers import invoke_cli


def test_anonymized_route_sends_keyed_copies_and_keeps_the_original(archive_dir, ct_factory, sink, tmp_path):
    key = tmp_path / "key"
    key.write_text("a long random secret\n")
    files = ct_factory.series(2, patient_id="SECRETPID", patient_name="Secret^Person")
    burned = ct_factory(patient_id="SECRETPID", extra={"BurnedInAnnotation": "YES"})
    added = invoke_cli("--archive", archive_dir, "route", "add", "anon", "--to", sink.spec,
                       "--anonymize", "--key-file", key, "--max-attempts", "5")
    assert added.returncode == 0, added.stderr
    listed = invoke_cli("--archive", archive_dir, "route", "list", "--json")
    assert json.loads(listed.stdout)["anonymize"] is True
    assert invoke_cli("--archive", archive_dir, "import", *files, burned, "--jobs", "1").returncode == 0

    report = run_once(archive_dir)[0]
    assert (report.delivered, report.dead) == (2, 1)  # burned-in text: a dead letter at once
    assert len(sink.datasets) == 2
    for ds in sink.datasets:
        assert str(ds.PatientID).startswith("ANON") and "Secret" not in str(ds.get("PatientName", ""))
        assert str(ds.SOPInstanceUID).startswith("2.25.")
    assert len({str(ds.StudyInstanceUID) for ds in sink.datasets}) == 1  # references line up
    shown = invoke_cli("--archive", archive_dir, "ls", "--level", "patient", "--json")
    assert "SECRETPID" in shown.stdout  # the archive keeps the original
    status = invoke_cli("--archive", archive_dir, "route", "status", "--json")
    assert status.returncode == 3
    assert "SECRET" not in status.stdout and "Secret" not in status.stdout
    dead = [json.loads(line) for line in status.stdout.splitlines() if '"dead"' in line and '"type": "dead"' in line]
    assert len(dead) == 1 and "not de-identified" in dead[0]["reason"]


def test_anonymize_needs_a_key(archive_dir, sink):
    result = invoke_cli("--archive", archive_dir, "route", "add", "anon", "--to", sink.spec, "--anonymize")
    assert result.returncode == 2 and "without a key" in result.stderr
