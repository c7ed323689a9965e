"""De-identify one data set: the table's actions at every depth, the markers, new File Meta.

The library entry point is `Anonymizer` (one key, options and site profile; call it per data
set or per file):

    anonymizer = Anonymizer(key=b"secret", options=Options(shift_dates=True))
    outcome = anonymizer.dataset(ds)        # ds is changed in place
    if outcome.status is Status.WRITTEN:
        data = anonymizer.encode(ds)        # Part-10 bytes: new preamble and File Meta

`file_bytes(data)` does both for the bytes of a file. Nothing here writes files or logs values.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from pacsctl.anonymize import encoding, residual, safe_private
from pacsctl.anonymize.identity import Identity, MapEntry
from pacsctl.anonymize.profile import BurnedIn, Decision, Options, OverrideAction, Policy, SiteProfile
from pacsctl.anonymize.table import BASIC_PROFILE_CODE, TABLE_EDITION, Action, Option

# Modalities whose images often carry burned-in text: refused by default unless the data set
# says BurnedInAnnotation NO.
BURNED_IN_MODALITIES = frozenset({"US", "SC", "XC", "ES", "OT"})
PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)

# A non-empty value valid for each VR (action D).
DUMMIES: dict[str, object] = {
    "AE": "ANONYMOUS",
    "AS": "000D",
    "CS": "ANONYMIZED",
    "DA": "19000101",
    "DS": "0",
    "DT": "19000101000000",
    "IS": "0",
    "LO": "ANONYMIZED",
    "LT": "ANONYMIZED",
    "PN": "ANONYMIZED",
    "SH": "ANONYMIZED",
    "ST": "ANONYMIZED",
    "TM": "000000",
    "UC": "ANONYMIZED",
    "UR": "urn:anonymized",
    "UT": "ANONYMIZED",
    "US": 0,
    "SS": 0,
    "UL": 0,
    "SL": 0,
    "UV": 0,
    "SV": 0,
    "FL": 0.0,
    "FD": 0.0,
    "AT": 0,
}
BINARY_DUMMY = b"\x00\x00"
REDACTED = "XXX"
PATIENT_NAME, PATIENT_ID = 0x00100010, 0x00100020


class Status(StrEnum):
    """How one input ended."""

    WRITTEN = "written"
    REFUSED = "refused"  # possibly burned-in text, or nothing to de-identify safely
    LEAK = "leak"  # the residual scan found the patient in what was left
    FAILED = "failed"  # unreadable, or not writable as DICOM after de-identifying
    SKIPPED = "skipped"  # not DICOM, a DICOMDIR, or a duplicate of an instance already written


@dataclass
class Outcome:
    """What de-identifying one data set gave: its status, why (never a patient value), the
    warnings (burned-in text allowed with --burned-in warn), and the encoded file when asked."""

    status: Status
    reason: str = ""
    warning: str = ""
    data: bytes | None = None
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    mapping: list[MapEntry] = field(default_factory=list)


@dataclass
class _Patient:
    """Per data set: the patient's pseudonym, date offset and anchors (for cleaning text)."""

    pseudonym: str
    date_offset: int | None
    anchors: residual.Anchors


class Anonymizer:
    """One de-identification set-up: a key, the options and a site profile.

    The same key gives the same UIDs, pseudonyms and date offsets for every data set, in this
    run and any later one. `record_map=True` keeps the original -> new pairs for `--map-out`
    (each outcome carries those it made).
    """

    def __init__(
        self,
        key: bytes,
        options: Options | None = None,
        profile: SiteProfile | None = None,
        patient_map: dict[str, str] | None = None,
        record_map: bool = False,
    ) -> None:
        self.options = options or Options()
        self.profile = profile or SiteProfile()
        self.policy = Policy(self.options, self.profile)
        self.identity = Identity(key, patient_map, recording=record_map)
        self._exempt = self._exempt_anchors()
        self._method = self._method_values()

    # -- the public calls ------------------------------------------------------------------

    def dataset(self, ds: Dataset, has_pixels: bool | None = None) -> Outcome:
        """De-identify `ds` in place and scan what is left. WRITTEN when it may be shared;
        REFUSED (burned-in text) or LEAK (the scan found the patient) when not. `has_pixels`
        tells about Pixel Data read separately (default: whether `ds` holds some)."""
        if has_pixels is None:
            has_pixels = any(tag in ds for tag in PIXEL_TAGS)
        refused = self._burned_in(ds) if has_pixels else ""
        warning = ""
        if refused:
            if self.options.burned_in is BurnedIn.REFUSE:
                return Outcome(Status.REFUSED, f"{refused}; --burned-in warn|allow writes it anyway")
            if self.options.burned_in is BurnedIn.WARN:
                warning = refused
        patient = self._patient(ds)
        self._walk(ds, patient)
        leaks = residual.scan(ds, patient.anchors)
        self._mark(ds)
        outcome = Outcome(
            Status.LEAK if leaks else Status.WRITTEN,
            reason="; ".join(str(leak) for leak in leaks[:3]),
            warning=warning,
            sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
            study_instance_uid=str(ds.get("StudyInstanceUID", "")),
            series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        )
        outcome.mapping = self.identity.take_entries()
        return outcome

    def encode(self, ds: Dataset, tail: bytes | memoryview = b"") -> bytes:
        """`ds` as a Part-10 file in its original transfer syntax: a zero preamble, File Meta
        rebuilt from the data set, and `tail` (raw Pixel Data it was read without) after it."""
        return encoding.encode(ds, tail)

    def file_bytes(self, data: bytes) -> Outcome:
        """De-identify the Part-10 file `data`; WRITTEN outcomes carry the new file's bytes
        (Pixel Data copied as it was). pydicom's warnings are silenced: they quote values."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            header = encoding.read_header(data)
            ds = header.dataset
            if "SOPInstanceUID" not in ds or "SOPClassUID" not in ds:
                return Outcome(Status.SKIPPED, "not a DICOM instance (no SOP Class or Instance UID)")
            outcome = self.dataset(ds, has_pixels=header.has_pixels)
            if outcome.status is Status.WRITTEN:
                outcome.data = self.encode(ds, header.tail)
            return outcome

    # -- the walk --------------------------------------------------------------------------

    def _patient(self, ds: Dataset) -> _Patient:
        anchors = residual.collect_anchors(ds, self._exempt)
        patient_id = str(ds.get("PatientID", "") or "").strip()
        key = patient_id or f"{ds.get('PatientName', '')}\0{ds.get('PatientBirthDate', '')}"
        pseudonym = self.identity.patient_id(key)
        offset = self.identity.date_offset(key) if self.options.shift_dates else None
        return _Patient(pseudonym, offset, anchors)

    def _walk(self, ds: Dataset, patient: _Patient) -> None:
        decide = self.policy.decide
        private_kept: list[int] = []
        has_private = False
        for tag in list(ds.keys()):
            number = int(tag)
            if number & 0xFFFF == 0:  # group lengths: retired, and wrong once values change
                del ds[tag]
                continue
            if number >> 16 & 1:
                has_private = True
                if number & 0xFFFF <= 0x00FF:
                    continue  # a private creator: decided by the elements of its block, below
            decision = decide(number)
            action = decision.action
            if action is Action.REMOVE:
                del ds[tag]
                continue
            if number >> 16 & 1:  # private: removed unless kept as safe, or by the site's rule
                if decision.override or (action is Action.CLEAN and safe_private.is_safe(ds, number)):
                    private_kept.append(number)
                else:
                    del ds[tag]
                    continue
            elif action is Action.KEEP and not decision.override:
                vr = element_vr(ds, number)
                if vr != "SQ" and not (vr in ("DA", "DT") and patient.date_offset is not None):
                    continue  # kept as read: a raw element is written back without decoding
            elem = ds[tag]
            if elem.VR == "SQ":
                self._sequence(ds, elem, decision, patient)
                continue
            self._element(ds, elem, decision, patient)
        if has_private:
            safe_private.drop_unused_creators(ds, private_kept)

    def _sequence(self, ds: Dataset, elem: DataElement, decision: Decision, patient: _Patient) -> None:
        if decision.action is Action.EMPTY:
            elem.value = Sequence()
            return
        if decision.override and decision.action is Action.DUMMY:
            del ds[elem.tag]  # a text value cannot stand in for a sequence: the site's rule removes it
            return
        # K, C, U/U* and D: keep the sequence and apply the profile inside every item (D on a
        # sequence keeps its structure, which the profile de-identifies item by item).
        for item in elem.value:
            self._walk(item, patient)

    def _element(self, ds: Dataset, elem: DataElement, decision: Decision, patient: _Patient) -> None:
        action, vr, number = decision.action, elem.VR, int(elem.tag)
        if decision.override:
            if action is Action.DUMMY:
                _set(elem, decision.value)
            return
        if number in (PATIENT_ID, PATIENT_NAME) and action in (Action.EMPTY, Action.DUMMY):
            # Pseudonyms (from the key or the patient map) instead of empty values: a cohort
            # stays linkable. A nested Patient ID gets its own.
            if number == PATIENT_NAME:
                elem.value = patient.pseudonym
            else:
                elem.value = self.identity.patient_id(str(elem.value or "").strip())
            return
        if action is Action.KEEP:
            if decision.row is None and vr in ("DA", "DT") and patient.date_offset is not None:
                _map_text(elem, lambda v: shift_date(v, vr, patient.date_offset or 0))
            return
        if action is Action.EMPTY:
            elem.value = None
        elif action is Action.UID or (action is Action.DUMMY and vr == "UI"):
            _map_text(elem, self.identity.uid)
        elif action is Action.DUMMY:
            elem.value = DUMMIES.get(vr, BINARY_DUMMY)
        elif action is Action.CLEAN:
            self._clean(elem, patient)

    def _clean(self, elem: DataElement, patient: _Patient) -> None:
        """C: a non-identifying value of similar meaning."""
        vr = elem.VR
        if vr in ("DA", "DT"):
            if patient.date_offset is None:
                elem.value = None
            else:
                _map_text(elem, lambda v: shift_date(v, vr, patient.date_offset or 0))
        elif vr == "TM":
            return  # dates move by whole days: times stay as they were
        elif vr == "AE":
            _map_text(elem, lambda v: "AE" + self.identity.short_code("ae", v, 14))
        elif vr in residual.TEXT_VRS:
            _map_text(elem, lambda v: redact(v, patient.anchors))
        # Binary values (overlay bitmaps, curves) are kept as they are: `--clean-graphics`
        # keeps them, and the burned-in check is the guard for pixels.

    # -- checks and markers ----------------------------------------------------------------

    def _burned_in(self, ds: Dataset) -> str:
        """Why the image may show burned-in text, or "" (marked free of it)."""
        burned = str(ds.get("BurnedInAnnotation", "") or "").upper()
        if burned == "YES":
            return "BurnedInAnnotation is YES (text in the pixels)"
        modality = str(ds.get("Modality", "") or "").upper()
        if modality in BURNED_IN_MODALITIES and burned != "NO":
            return f"modality {modality} images often carry burned-in text (BurnedInAnnotation is not NO)"
        return ""

    def _exempt_anchors(self) -> frozenset[residual.AnchorKind]:
        """Anchor kinds the options or the site keep on purpose (the scan would flag them)."""
        exempt = set()
        if self.options.keep_institution:
            exempt.add(residual.AnchorKind.INSTITUTION)
        kept = {tag for tag, rule in self.profile.overrides.items() if rule.action is OverrideAction.KEEP}
        for kind, keywords in residual.ANCHOR_SOURCES.items():
            if any(pydicom.datadict.tag_for_keyword(k) in kept for k in keywords):
                exempt.add(kind)
        return frozenset(exempt)

    def _method_values(self) -> list[str]:
        values = [f"pacsctl PS3.15 E.1-1 {TABLE_EDITION} Basic Profile"]
        values += [option.meaning for option in self.options.enabled()]
        if self.profile.name:
            values.append(f"profile {self.profile.name}")
        values += [rule.label for rule in self.profile.overrides.values()]
        return [value[:64] for value in values]

    def _mark(self, ds: Dataset) -> None:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = self._method if len(self._method) > 1 else self._method[0]
        codes = [BASIC_PROFILE_CODE] + [(o.code, o.meaning) for o in self.options.enabled()]
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        if self.options.keep_dates:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        elif self.options.shift_dates:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"


def _set(elem: DataElement, value: str | None) -> None:
    """A site's replacement value, typed for the element's VR."""
    if value is None:
        elem.value = None
    elif elem.VR in ("US", "SS", "UL", "SL", "UV", "SV"):
        elem.value = int(value)
    elif elem.VR in ("FL", "FD"):
        elem.value = float(value)
    else:
        elem.value = value


def _map_text(elem: DataElement, change: Callable[[str], str]) -> None:
    """Apply `change` to each value of a (possibly multi-valued) text element."""
    value = elem.value
    if value is None or value == "":
        return
    if isinstance(value, (MultiValue, list, tuple)):
        elem.value = [change(str(v)) for v in value]
    else:
        elem.value = change(str(value))


def redact(text: str, anchors: residual.Anchors) -> str:
    """`text` with every anchor (a name part, an ID, the birth date...) replaced by XXX."""
    if not anchors or anchors.find(text) is None:
        return text
    for needle in anchors.substrings:
        text = re.sub(re.escape(needle), REDACTED, text, flags=re.IGNORECASE)
    for phrase in anchors.phrases:
        pattern = r"[^0-9A-Za-z\u00C0-\uFFFF]+".join(re.escape(w) for w in phrase.split(" "))
        text = re.sub(
            rf"(?<![0-9A-Za-z\u00C0-\uFFFF]){pattern}(?![0-9A-Za-z\u00C0-\uFFFF])",
            REDACTED,
            text,
            flags=re.IGNORECASE,
        )
    for word in anchors.words:
        text = re.sub(
            rf"(?<![0-9A-Za-z\u00C0-\uFFFF]){re.escape(word)}(?![0-9A-Za-z\u00C0-\uFFFF])",
            REDACTED,
            text,
            flags=re.IGNORECASE,
        )
    return text


_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")


def shift_date(value: str, vr: str, days: int) -> str:
    """A DA or DT value moved by `days` (a DT keeps its time and offset); "" when the value is
    not a full date (a date that cannot be moved is not kept)."""
    value = value.strip()
    match = _DATE.match(value)
    if match is None:
        return ""
    try:
        day = dt.date(int(match.group(1)), int(match.group(2)), int(match.group(3)))
        moved = day + dt.timedelta(days=days)
    except (ValueError, OverflowError):
        return ""
    text = (
        moved.strftime("%Y%m%d")
        if moved.year >= 1000
        else f"{moved.year:04d}{moved.month:02d}{moved.day:02d}"
    )
    return text + value[8:] if vr == "DT" else text


def element_vr(ds: Dataset, tag: int) -> str:
    """The VR of `tag` in `ds` without converting a raw element: the dictionary's when the file
    gave none (implicit VR) or UN (a sequence may hide behind UN)."""
    raw = ds.get_item(tag)
    vr = getattr(raw, "VR", None)
    if vr and vr != "UN":
        return str(vr)
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


__all__ = ["Anonymizer", "Outcome", "Status", "Options", "SiteProfile", "BurnedIn", "Option", "shift_date"]
