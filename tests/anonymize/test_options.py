"""The option flags beyond the table rows: shifted dates per patient, pseudonyms from a map,
the mapping file, site profiles, and the safe private list with its creator check."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pacsctl.anonymize.deidentify import Anonymizer, Status
from pacsctl.anonymize.profile import Options, SiteProfile
from pacsctl.errors import UsageError
from tests.anonymize.helpers import PATIENT, linked_pair, part10
from tests.helpers import invoke_cli

KEY = b"options key"


def _date(text: str) -> dt.date:
    return dt.datetime.strptime(text[:8], "%Y%m%d").date()


def test_shift_dates_one_offset_per_patient_every_date_and_age_right() -> None:
    first, second = linked_pair()
    second.AcquisitionDateTime = "20240511083000.5+0100"
    item = Dataset()
    item.ProcedureCreationDate = "20240101"  # a DA the table does not list, in a sequence
    second.AnatomicRegionSequence = Sequence([item])
    other, _ = linked_pair()
    other.PatientID = "SOMEONE-ELSE"
    options = Options(shift_dates=True, keep_patient_characteristics=True)
    anonymizer = Anonymizer(KEY, options)
    out = [pydicom.dcmread(io.BytesIO(anonymizer.file_bytes(part10(ds)).data or b"")) for ds in (first, second, other)]
    offsets = {(_date(o.StudyDate) - _date("20240510")).days for o in out[:2]}
    assert len(offsets) == 1 and -3650 <= offsets.pop() <= -365
    offset = (_date(out[0].StudyDate) - _date("20240510")).days
    assert out[1].AcquisitionDateTime == (_date("20240511") + dt.timedelta(days=offset)).strftime("%Y%m%d") + "083000.5+0100"
    assert out[1].AnatomicRegionSequence[0].ProcedureCreationDate == (dt.date(2024, 1, 1) + dt.timedelta(days=offset)).strftime("%Y%m%d")
    assert out[0].StudyTime == "101500"  # whole days: times stay
    assert (_date(out[2].StudyDate) - _date("20240510")).days != offset  # another patient, another offset
    assert out[0].LongitudinalTemporalInformationModified == "MODIFIED"
    assert "113107" in [i.CodeValue for i in out[0].DeidentificationMethodCodeSequence]
    assert out[0].PatientAge == "062Y"  # kept as recorded: it still fits the moved study date
    again = Anonymizer(KEY, options).file_bytes(part10(first)).data
    assert pydicom.dcmread(io.BytesIO(again or b"")).StudyDate == out[0].StudyDate  # across runs


def test_shifted_dates_keep_intervals_and_the_birth_date_stays_removed() -> None:
    first, _ = linked_pair()
    first.ContentDate = "20240517"
    out = pydicom.dcmread(io.BytesIO(Anonymizer(KEY, Options(shift_dates=True)).file_bytes(part10(first)).data or b""))
    assert out.PatientBirthDate == ""  # Z in the table, also with --shift-dates
    assert (_date(out.ContentDate) - _date(out.StudyDate)).days == 7  # intervals are kept
    assert "PatientAge" not in out  # X unless --keep-patient-characteristics (then kept as recorded)


def test_keep_dates_and_keep_uids_keep_them() -> None:
    first, _ = linked_pair()
    out = pydicom.dcmread(io.BytesIO(Anonymizer(KEY, Options(keep_dates=True, keep_uids=True)).file_bytes(part10(first)).data or b""))
    assert (out.StudyDate, out.StudyTime, out.SOPInstanceUID) == (first.StudyDate, first.StudyTime, first.SOPInstanceUID)
    assert out.LongitudinalTemporalInformationModified == "UNMODIFIED"


def test_clean_descriptors_keeps_descriptions_without_the_patient() -> None:
    first, _ = linked_pair()
    out = pydicom.dcmread(io.BytesIO(Anonymizer(KEY, Options(clean_descriptors=True)).file_bytes(part10(first)).data or b""))
    assert out.StudyDescription == "CT chest XXX follow-up"
    assert out.ImageComments == "for Dr. House"  # what the scan cannot know stays: see README


def test_site_profile_overrides_are_applied_and_listed(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('name = "trial ABC"\nkeep = ["StudyDescription"]\nremove = ["Modality"]\n'
                    '[replace]\n"(0008,0080)" = "Site 7"\n')
    profile = SiteProfile.load(path)
    first, _ = linked_pair()
    first.StudyDescription = "CT chest"
    out = pydicom.dcmread(io.BytesIO(Anonymizer(KEY, profile=profile).file_bytes(part10(first)).data or b""))
    assert out.StudyDescription == "CT chest" and "Modality" not in out and out.InstitutionName == "Site 7"
    assert list(out.DeidentificationMethod) == [
        "pacsctl PS3.15 E.1-1 2024b Basic Profile", "profile trial ABC", "keep StudyDescription",
        "remove Modality", "replace InstitutionName"]
    for bad in ('keep = ["NoSuchKeyword"]', 'colour = "red"', "keep = [", 'keep = ["Modality"]\nremove = ["Modality"]'):
        path.write_text(bad)
        with pytest.raises(UsageError):
            SiteProfile.load(path)


def test_keep_safe_private_checks_the_creator() -> None:
    first, _ = linked_pair()
    first.add_new(0x00190010, "LO", "SIEMENS MR HEADER")
    first.add_new(0x0019100C, "IS", "1000")  # B value: on the safe list under this creator
    first.add_new(0x00191008, "CS", "IMAGE NUM 4")  # not on the list
    first.add_new(0x00430010, "LO", "OTHER VENDOR")
    first.add_new(0x00431039, "IS", "1000")  # the GE element number, but another creator
    out = pydicom.dcmread(io.BytesIO(Anonymizer(KEY, Options(keep_safe_private=True)).file_bytes(part10(first)).data or b""))
    kept = {int(e.tag) for e in out if e.tag.is_private}
    assert kept == {0x00190010, 0x0019100C}
    plain = pydicom.dcmread(io.BytesIO(Anonymizer(KEY).file_bytes(part10(first)).data or b""))
    assert not any(e.tag.is_private for e in plain)


def test_patient_map_and_map_out(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    first, second = linked_pair()
    (folder / "a.dcm").write_bytes(part10(first))
    (folder / "b.dcm").write_bytes(part10(second))
    patient_map = tmp_path / "patients.csv"
    patient_map.write_text(f"patient_id,pseudonym\n{PATIENT['PatientID']},SUBJ-001\n")
    map_out = tmp_path / "secret" / "map.csv"
    result = invoke_cli("anonymize", folder, "--out", tmp_path / "out", "--key", "k", "--shift-dates",
                        "--patient-map", patient_map, "--map-out", map_out, "--json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    outputs = [pydicom.dcmread(r["output"]) for r in records[:-1]]
    assert {(o.PatientID, str(o.PatientName)) for o in outputs} == {("SUBJ-001", "SUBJ-001")}
    assert map_out.stat().st_mode & 0o777 == 0o600
    rows = list(csv.DictReader(map_out.read_text().splitlines()))
    pairs = {(r["kind"], r["original"]): r["replacement"] for r in rows}
    assert pairs[("patient_id", PATIENT["PatientID"])] == "SUBJ-001"
    assert pairs[("uid", first.SOPInstanceUID)] in {o.SOPInstanceUID for o in outputs}
    assert pairs[("uid", first.StudyInstanceUID)] == outputs[0].StudyInstanceUID
    assert ("date_offset_days", PATIENT["PatientID"]) in pairs
    assert records[-1]["mapped"] == len(rows)
    assert PATIENT["PatientID"] not in result.stdout + result.stderr
