"""DICOM attribute matching (PS3.4 C.2.2.2) over index records.

`pacsctl ls -k KEY=VALUE` and the C-FIND SCP both filter index records with
:func:`compile_filters`. A record is a mapping keyed by DICOM keywords whose
values are already decoded: ``str`` (PN as ``"Doe^John"``, DA ``"20240131"``,
TM ``"101500.123"``), ``int``/``float`` for numbers, a ``list`` for
multi-valued attributes (``ModalitiesInStudy``), ``None``/``""`` when empty.

The VR in pydicom's data dictionary decides how a query value matches:

======================  =====================================================
query value             meaning
======================  =====================================================
``""`` or ``"*"``       universal matching: every record, even one without
                        the key (``"*"`` too for dates and UIDs, because SCUs
                        send it)
``'""'``                empty value matching: the attribute is empty/absent
``Doe^John``            single value: exact (PN: case-insensitive, see below)
``Doe*``, ``D?e``       wildcards, not for DA/TM/DT/UI or numeric VRs;
                        ``?`` is one (unicode) character
``20240101-20240331``   range for DA/TM/DT; either end may be left open
                        (``-20240331``, ``20240101-``); TM and DT ranges take
                        partial precision (``10-12`` is 10:00:00 to
                        12:59:59.999999, ``1015`` is the whole minute); a TM
                        range whose start is after its end wraps midnight
``1.2.3\\1.2.4``         UID list matching; for other VRs (except LT, ST,
                        UT, UR, where a backslash is text) a backslash
                        separates alternatives: ``ModalitiesInStudy=CT\\MR``
======================  =====================================================

A multi-valued record value matches when any of its elements matches
(``ModalitiesInStudy=CT`` matches ``["CT", "SR"]``). A key missing from a record
matches only universal and empty value matching.

Deliberate choices (documented for admins):

* PN matching ignores case (``doe*`` finds ``DOE^JOHN``): what PACS users
  type is rarely in the stored case. Every other VR matches with exact case.
* PN trailing empty components are insignificant (``Doe^John`` matches
  ``Doe^John^^^``). A query without ``=`` matches any component group
  (alphabetic, ideographic or phonetic: ``山田*`` finds
  ``Yamada^Tarou=山田^太郎``); a query with ``=`` matches group by group.
* Strings are compared in Unicode NFC, so composed and decomposed accents
  are equal; leading/trailing spaces are insignificant except leading ones in
  LT/ST/UT.
* DT offsets (``&ZZXX``) are applied when present, so values are compared in
  UTC; values without an offset are compared as written.
* Wildcards are matched without backtracking (time linear in the value times
  the pattern), and a wildcard value takes at most ``MAX_WILDCARDS`` wildcards
  (a run of ``*`` counts once) and ``MAX_WILDCARD_VALUE_LENGTH`` characters:
  a query must not be able to stall a serving node.
"""

from __future__ import annotations

import difflib
import math
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from pacsctl.dicom.attributes import INSTANCE_KEYS, PATIENT_FIELDS, SERIES_FIELDS, STUDY_FIELDS
from pacsctl.dicom.identifying import shown_value
from pacsctl.errors import InvalidQueryError

__all__ = [
    "QueryLevel",
    "LEVELS",
    "LEVEL_KEYS",
    "UNIQUE_KEY",
    "Criterion",
    "MAX_WILDCARDS",
    "MAX_WILDCARD_VALUE_LENGTH",
    "QueryValueTooComplexError",
    "RecordFilter",
    "compile_filters",
    "level_from_name",
    "parse_key_values",
    "resolve_keyword",
]

Record = Mapping[str, Any]


class QueryLevel(StrEnum):
    """A Query/Retrieve level (PS3.4 C.6), top down; the value is what (0008,0052) holds."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"


LEVELS: tuple[QueryLevel, ...] = tuple(QueryLevel)

#: Attributes an index record carries per Query/Retrieve level: the index's schema
#: (`dicom.attributes`) plus the counts the index derives. A record of a level also
#: carries the keys of the levels above it (a study record holds the patient keys, ...).
LEVEL_KEYS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "PATIENT": (
            *PATIENT_FIELDS,
            "NumberOfPatientRelatedStudies",
            "NumberOfPatientRelatedSeries",
            "NumberOfPatientRelatedInstances",
        ),
        "STUDY": (
            *STUDY_FIELDS,
            "ModalitiesInStudy",
            "NumberOfStudyRelatedSeries",
            "NumberOfStudyRelatedInstances",
        ),
        "SERIES": (*SERIES_FIELDS, "NumberOfSeriesRelatedInstances"),
        "IMAGE": INSTANCE_KEYS,
    }
)

#: The unique key of each level (PS3.4 C.6.1.1 / C.6.2.1).
UNIQUE_KEY: Mapping[str, str] = MappingProxyType(
    {
        "PATIENT": "PatientID",
        "STUDY": "StudyInstanceUID",
        "SERIES": "SeriesInstanceUID",
        "IMAGE": "SOPInstanceUID",
    }
)

# Names users type for a level (`ls --level instance`) -> DICOM level.
_LEVEL_ALIASES = {**{level.value: level for level in QueryLevel}, "INSTANCE": QueryLevel.IMAGE}

_NUMERIC_INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "SV", "UV"})
_NUMERIC_FLOAT_VRS = frozenset({"DS", "FL", "FD"})
# Single-valued text VRs: a backslash is part of the value, not a separator.
_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})
_STRING_VRS = frozenset({"AE", "AS", "CS", "LO", "SH", "UC", "PN"} | _TEXT_VRS)
_UNMATCHABLE_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "AT"})

_UID_RE = re.compile(r"[0-9]+(?:\.[0-9]+)*")
_EMPTY_VALUE_QUERY = '""'


def level_from_name(name: str) -> QueryLevel:
    """Return the DICOM Query/Retrieve level for a user-typed level name.

    >>> level_from_name("instance")
    <QueryLevel.IMAGE: 'IMAGE'>
    """
    level = _LEVEL_ALIASES.get(name.strip().upper())
    if level is None:
        raise InvalidQueryError(
            f"unknown level {name!r}",
            hint="use one of patient, study, series, image (or instance)",
        )
    return level


# --------------------------------------------------------------------------
# Keywords and `-k KEY=VALUE`
# --------------------------------------------------------------------------

# The VRs of the keywords the index holds and C-FIND asks for most: `ls -k StudyDate=...` then
# needs no pydicom (importing it, and numpy with it, is most of a small command's start-up).
# Any other keyword is looked up in pydicom's dictionary, imported on first use; a test checks
# this table against it.
COMMON_VRS: Mapping[str, str] = MappingProxyType(
    {
        "AccessionNumber": "SH",
        "AcquisitionDate": "DA",
        "BodyPartExamined": "CS",
        "ContentDate": "DA",
        "ContentTime": "TM",
        "InstanceAvailability": "CS",
        "InstanceNumber": "IS",
        "InstitutionName": "LO",
        "ModalitiesInStudy": "CS",
        "Modality": "CS",
        "NumberOfPatientRelatedInstances": "IS",
        "NumberOfPatientRelatedSeries": "IS",
        "NumberOfPatientRelatedStudies": "IS",
        "NumberOfSeriesRelatedInstances": "IS",
        "NumberOfStudyRelatedInstances": "IS",
        "NumberOfStudyRelatedSeries": "IS",
        "OtherPatientIDs": "LO",
        "PatientAge": "AS",
        "PatientBirthDate": "DA",
        "PatientBirthTime": "TM",
        "PatientID": "LO",
        "PatientName": "PN",
        "PatientSex": "CS",
        "QueryRetrieveLevel": "CS",
        "ReferringPhysicianName": "PN",
        "RetrieveAETitle": "AE",
        "SOPClassUID": "UI",
        "SOPClassesInStudy": "UI",
        "SOPInstanceUID": "UI",
        "SeriesDate": "DA",
        "SeriesDescription": "LO",
        "SeriesInstanceUID": "UI",
        "SeriesNumber": "IS",
        "SeriesTime": "TM",
        "SpecificCharacterSet": "CS",
        "StationName": "SH",
        "StudyDate": "DA",
        "StudyDescription": "LO",
        "StudyID": "SH",
        "StudyInstanceUID": "UI",
        "StudyTime": "TM",
        "TransferSyntaxUID": "UI",
    }
)
_COMMON_BY_LOWER = {k.lower(): k for k in COMMON_VRS}


@lru_cache(maxsize=1)
def _dictionary() -> tuple[Mapping[str, Any], dict[str, str]]:
    """pydicom's keyword dictionary and its keywords by lower case (imported on first use)."""
    from pydicom.datadict import keyword_dict

    return keyword_dict, {k.lower(): k for k in keyword_dict}


def keyword_vr(keyword: str) -> str:
    """The VR of a DICOM keyword (from the table above, else from pydicom's dictionary)."""
    vr = COMMON_VRS.get(keyword)
    if vr is None:
        from pydicom.datadict import dictionary_VR

        vr = str(dictionary_VR(keyword))
    return vr


_TAG_RE = re.compile(r"\(?\s*([0-9A-Fa-f]{4})\s*,?\s*([0-9A-Fa-f]{4})\s*\)?")


def resolve_keyword(name: str) -> str:
    """Return the DICOM keyword for `name`: a keyword in any case or a tag.

    Accepts ``PatientName``, ``patientname``, ``00100010``, ``0010,0010`` and
    ``(0010,0010)``. Raises :class:`InvalidQueryError` with a suggestion otherwise.

    >>> resolve_keyword("(0010,0020)")
    'PatientID'
    """
    text = name.strip()
    common = _COMMON_BY_LOWER.get(text.lower())
    if common is not None:
        return common
    keyword_dict, by_lower = _dictionary()
    if text in keyword_dict:
        return text
    folded = by_lower.get(text.lower())
    if folded is not None:
        return folded
    tag_match = _TAG_RE.fullmatch(text)
    if tag_match:
        from pydicom.datadict import keyword_for_tag

        keyword = keyword_for_tag(int(tag_match[1] + tag_match[2], 16))
        if keyword:
            return keyword
        raise InvalidQueryError(
            f"tag {text!r} has no keyword in the DICOM dictionary",
            hint="private and unknown tags cannot be matched; use a standard keyword",
        )
    close = difflib.get_close_matches(text, keyword_dict.keys(), n=3, cutoff=0.75)
    hint = (
        f"did you mean {', '.join(close)}?"
        if close
        else "use a DICOM keyword such as PatientID, StudyDate or Modality"
    )
    raise InvalidQueryError(f"unknown DICOM keyword {text!r}", hint=hint)


def parse_key_values(items: Iterable[str]) -> dict[str, str]:
    """Parse CLI ``-k KEY=VALUE`` items into ``{keyword: value}``.

    The key is resolved with :func:`resolve_keyword`; the value is kept as
    given (it may be empty: universal matching). A key given twice is an error,
    since the intent (any of them? all of them?) is unclear.

    >>> parse_key_values(["patientid=123", "ModalitiesInStudy=CT\\\\MR"])
    {'PatientID': '123', 'ModalitiesInStudy': 'CT\\\\MR'}
    """
    result: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            # Not quoted: without a keyword we cannot tell whether it holds a patient's name.
            raise InvalidQueryError(
                "a filter has no keyword before '='" if sep else "a filter is not KEY=VALUE",
                hint="for example -k PatientName='Doe*' or -k StudyDate=20240101-20240331",
            )
        keyword = resolve_keyword(key)
        if keyword in result:
            raise InvalidQueryError(
                f"{keyword} is given more than once",
                hint="give one value; separate alternatives with a backslash, e.g. CT\\MR",
            )
        result[keyword] = value
    return result


def parse_query_keys(items: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Parse a C-FIND's ``-k`` items: ``KEY=VALUE`` filters (as :func:`parse_key_values`) and
    bare ``KEY`` return keys (findscu's convention: ask for the attribute, match anything).

    >>> parse_query_keys(["PatientID=1", "accessionnumber"])
    ({'PatientID': '1'}, ['AccessionNumber'])
    """
    items = list(items)
    filters = parse_key_values(i for i in items if "=" in i)
    wanted = [resolve_keyword(i) for i in items if "=" not in i]
    return filters, [k for k in dict.fromkeys(wanted) if k not in filters]


# --------------------------------------------------------------------------
# Value helpers
# --------------------------------------------------------------------------


def _nfc(text: str) -> str:
    """Unicode NFC form; ASCII (the common case) is returned untouched."""
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def _is_empty(value: Any) -> bool:
    """True when a record value counts as zero-length in DICOM terms."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple)):
        return all(_is_empty(v) for v in value)
    return False


def _split_values(query: str, vr: str) -> list[str]:
    """Split a query on backslash (DICOM's value separator) where the VR allows it."""
    if vr in _TEXT_VRS:
        return [query]
    return query.split("\\")


def _has_wildcard(text: str) -> bool:
    return "*" in text or "?" in text


#: Query values with wildcards are refused beyond these sizes (the SCP answers 0xA900), so
#: that no query makes matching costly: a value's cost is bounded by its length times the
#: length of the record value it is matched against.
MAX_WILDCARD_VALUE_LENGTH = 1024
MAX_WILDCARDS = 32


class QueryValueTooComplexError(InvalidQueryError):
    """A query value refused for its size, not its content: the message names the keyword,
    never the value (it may be a patient's name)."""

    def __init__(self, keyword: str, why: str) -> None:
        super().__init__(
            f"{keyword}: the query value {why}",
            hint=f"wildcard values take at most {MAX_WILDCARDS} wildcards and "
            f"{MAX_WILDCARD_VALUE_LENGTH} characters",
        )
        self.keyword = keyword


def _check_wildcard_value(keyword: str, query: str) -> None:
    """Refuse a wildcard query value too long or with too many wildcards (runs of `*` count
    once: they mean the same as one)."""
    if not _has_wildcard(query):
        return
    if len(query) > MAX_WILDCARD_VALUE_LENGTH:
        raise QueryValueTooComplexError(
            keyword, f"is {len(query)} characters long (at most {MAX_WILDCARD_VALUE_LENGTH} with wildcards)"
        )
    wildcards = query.count("?") + len(_STAR_RUN.findall(query))
    if wildcards > MAX_WILDCARDS:
        raise QueryValueTooComplexError(keyword, f"has {wildcards} wildcards (at most {MAX_WILDCARDS})")


_STAR_RUN = re.compile(r"\*+")


@lru_cache(maxsize=4096)
def _fold_char(ch: str) -> str:
    """Case-fold one character, keeping it one character (so `?` still matches it)."""
    for folded in (ch.casefold(), ch.lower()):
        if len(folded) == 1:
            return folded
    return ch


def _fold(text: str) -> str:
    """Case-insensitive comparison form with the same length as `text`. Not str.lower() on
    non-ASCII text: it changes lengths (İ) and treats a final sigma differently."""
    if text.isascii():
        return text.lower()
    return "".join(map(_fold_char, text))


def _segment_at(text: str, pos: int, segment: str) -> bool:
    """Whether `segment` (literal characters and `?`) matches `text` at `pos`."""
    if "?" not in segment:
        return text.startswith(segment, pos)
    if pos + len(segment) > len(text):
        return False
    return all(p == "?" or p == text[pos + i] for i, p in enumerate(segment))


def _find_segment(text: str, segment: str, start: int, end: int) -> int:
    """Leftmost position >= start where `segment` matches and ends by `end`, or -1."""
    if "?" not in segment:
        return text.find(segment, start, end)
    for pos in range(start, end - len(segment) + 1):
        if _segment_at(text, pos, segment):
            return pos
    return -1


class _Glob:
    """A DICOM wildcard pattern (`*` any run, `?` one character) matched without backtracking.

    The pattern is split at its `*` runs into fixed-length segments: the first must match at
    the start, the last at the end, and each one between is placed at its leftmost match after
    the previous one. Leftmost placement never loses a match (a later one leaves less room for
    the rest), so nothing is retried: the time is at most the text's length times the
    pattern's, where a regex's `.*` backtracking is exponential in the number of stars
    (issue 10 item 13: 25 stars against a 19-character name never finished)."""

    __slots__ = ("ignore_case", "segments", "has_star", "min_length")

    def __init__(self, pattern: str, ignore_case: bool) -> None:
        self.ignore_case = ignore_case
        pattern = _STAR_RUN.sub("*", _fold(pattern) if ignore_case else pattern)
        self.segments = pattern.split("*")
        self.has_star = len(self.segments) > 1
        self.min_length = len(pattern) - (len(self.segments) - 1)

    def fullmatch(self, text: str) -> bool:
        """True when the whole of `text` matches the pattern."""
        if self.ignore_case:
            text = _fold(text)
        segments = self.segments
        if not self.has_star:
            return len(text) == self.min_length and _segment_at(text, 0, segments[0])
        if len(text) < self.min_length:
            return False
        head, tail = segments[0], segments[-1]
        end = len(text) - len(tail)
        if not (_segment_at(text, 0, head) and _segment_at(text, end, tail)):
            return False
        pos = len(head)
        for segment in segments[1:-1]:
            found = _find_segment(text, segment, pos, end)
            if found < 0:
                return False
            pos = found + len(segment)
        return True


def _reject_wildcards(keyword: str, vr: str, query: str) -> None:
    if _has_wildcard(query):
        hint = "wildcards * and ? work on text attributes only"
        if vr in _FORMATS:
            hint = f"{vr} values look like {_FORMATS[vr]}; use a range such as A-B, -B or A-"
        raise InvalidQueryError(
            f"{keyword} ({vr}) does not take wildcards: {shown_value(keyword, query)}", hint=hint
        )


# --------------------------------------------------------------------------
# Matchers: each returns a test for ONE non-empty scalar record value
# --------------------------------------------------------------------------

ValueTest = Callable[[Any], bool]


def _string_test(keyword: str, vr: str, query: str) -> tuple[ValueTest, tuple[str, ...] | None]:
    """Exact or wildcard matching with exact case (all string VRs but PN)."""
    strip: Callable[[str], str] = str.rstrip if vr in _TEXT_VRS else str.strip
    exact: dict[str, None] = {}  # ordered set: exact() keeps the user's order
    patterns: list[_Glob] = []
    for alt in _split_values(query, vr):
        alt = _nfc(strip(alt))
        if _has_wildcard(alt):
            patterns.append(_Glob(alt, ignore_case=False))
        else:
            exact[alt] = None

    def test(value: Any) -> bool:
        text = _nfc(strip(str(value)))
        return text in exact or any(p.fullmatch(text) for p in patterns)

    exact_values = None if patterns else tuple(exact)
    return test, exact_values


@lru_cache(maxsize=65536)
def _pn_groups(text: str) -> tuple[str, ...]:
    """Component groups of a PN with trailing empty components removed.

    Cached: a patient's name recurs on each of their study/series records.
    """
    groups = [g.strip().rstrip("^").strip() for g in _nfc(text.strip()).split("=")]
    while len(groups) > 1 and not groups[-1]:
        groups.pop()
    return tuple(groups)


def _pn_test(keyword: str, vr: str, query: str) -> tuple[ValueTest, None]:
    """Case-insensitive PN matching with wildcards, per component group."""
    alternatives: list[list[_Glob | None]] = []
    for alt in _split_values(query, vr):
        groups = _pn_groups(alt)
        # An empty query group matches any record group (universal per group).
        alternatives.append([_Glob(g, ignore_case=True) if g else None for g in groups])

    def test(value: Any) -> bool:
        record_groups = _pn_groups(str(value))
        for patterns in alternatives:
            if len(patterns) == 1:
                # No '=' in the query: any component group may match.
                if patterns[0] is None or any(patterns[0].fullmatch(g) for g in record_groups):
                    return True
                continue
            if all(
                p is None or (i < len(record_groups) and p.fullmatch(record_groups[i]))
                for i, p in enumerate(patterns)
            ):
                return True
        return False

    return test, None


def _uid_test(keyword: str, vr: str, query: str) -> tuple[ValueTest, tuple[str, ...]]:
    """UID single value or list matching (no wildcards)."""
    _reject_wildcards(keyword, vr, query)
    uids = tuple(u.strip().rstrip("\x00") for u in query.split("\\"))
    for uid in uids:
        if len(uid) > 64 or not _UID_RE.fullmatch(uid):
            raise InvalidQueryError(
                f"{keyword}: {shown_value(keyword, uid)} is not a valid UID",
                hint="UIDs are digits and dots, at most 64 characters; list several with a backslash",
            )
    wanted = frozenset(uids)

    def test(value: Any) -> bool:
        return str(value).strip().rstrip("\x00") in wanted

    return test, tuple(dict.fromkeys(uids))


def _numeric_test(keyword: str, vr: str, query: str) -> tuple[ValueTest, None]:
    """Single value matching of numbers (IS, DS, US, ...), compared as numbers."""
    _reject_wildcards(keyword, vr, query)
    as_int = vr in _NUMERIC_INT_VRS
    wanted: set[float] = set()
    for alt in query.split("\\"):
        number = _to_number(alt, as_int)
        if number is None:
            kind = "an integer" if as_int else "a number"
            raise InvalidQueryError(
                f"{keyword} ({vr}) expects {kind}, got {shown_value(keyword, alt)}",
                hint="numeric attributes match one value exactly (or several separated by a backslash)",
            )
        wanted.add(number)

    def test(value: Any) -> bool:
        number = _to_number(value, as_int)
        return number is not None and number in wanted

    return test, None


def _to_number(value: Any, as_int: bool) -> float | None:
    """Parse a number from a record or query value; None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            return None
    if not math.isfinite(number) or (as_int and not number.is_integer()):
        return None
    return number


# ---- dates, times, date-times: every value becomes an interval [lo, hi] ----


def _parse_date(text: str, *, upper: bool) -> str | None:
    """YYYYMMDD (or legacy YYYY.MM.DD) -> 'YYYYMMDD', None when not a real date."""
    text = text.strip()
    if len(text) == 10 and text[4] == "." and text[7] == ".":
        text = text.replace(".", "")
    if len(text) != 8 or not text.isdigit():
        return None
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return None
    return text


def _parse_time(text: str, *, upper: bool) -> int | None:
    """TM with partial precision -> microseconds since midnight.

    With ``upper`` the unspecified parts take their largest value, so
    ``"12"`` as a range end means 12:59:59.999999. Returns None if invalid.
    """
    text = text.strip().replace(":", "")  # ACR-NEMA style HH:MM:SS
    m = re.fullmatch(r"(\d\d)(\d\d)?(\d\d)?(?:\.(\d{1,6}))?", text)
    if not m or (m[4] is not None and m[3] is None):
        return None
    hh = int(m[1])
    mm = int(m[2]) if m[2] else (59 if upper else 0)
    ss = int(m[3]) if m[3] else (59 if upper else 0)
    if m[4] is not None:
        frac = int(m[4].ljust(6, "9" if upper else "0"))
    else:
        frac = 999_999 if upper else 0
    if hh > 23 or mm > 59 or ss > 60:  # 60: leap second, allowed by PS3.5
        return None
    return ((hh * 60 + mm) * 60 + ss) * 1_000_000 + frac


_DT_RE = re.compile(r"(\d{4})(\d\d)?(\d\d)?(\d\d)?(\d\d)?(\d\d)?(?:\.(\d{1,6}))?([+-]\d{4})?")


def _parse_datetime(text: str, *, upper: bool) -> datetime | None:
    """DT with partial precision and optional &ZZXX offset -> naive datetime (UTC if offset)."""
    m = _DT_RE.fullmatch(text.strip())
    if not m:
        return None
    parts = m.groups()
    # Precision must be contiguous: no seconds without minutes, etc.
    present = [p is not None for p in parts[1:6]]
    if any(later and not earlier for earlier, later in zip(present, present[1:], strict=False)):
        return None
    if parts[6] is not None and parts[5] is None:
        return None
    year = int(parts[0])
    month = int(parts[1]) if parts[1] else (12 if upper else 1)
    try:
        if parts[2]:
            day = int(parts[2])
        elif upper:
            day = (date(year + month // 12, month % 12 + 1, 1) - timedelta(days=1)).day
        else:
            day = 1
        hour = int(parts[3]) if parts[3] else (23 if upper else 0)
        minute = int(parts[4]) if parts[4] else (59 if upper else 0)
        second = int(parts[5]) if parts[5] else (59 if upper else 0)
        second = min(second, 59) if second == 60 else second  # leap second
        if parts[6] is not None:
            micro = int(parts[6].ljust(6, "9" if upper else "0"))
        else:
            micro = 999_999 if upper else 0
        value = datetime(year, month, day, hour, minute, second, micro)
    except (ValueError, OverflowError):
        return None
    if parts[7]:
        sign = -1 if parts[7][0] == "-" else 1
        hh, mm = int(parts[7][1:3]), int(parts[7][3:5])
        offset = sign * (hh * 60 + mm)
        if not -12 * 60 <= offset <= 14 * 60 or mm > 59:
            return None
        try:
            value -= timedelta(minutes=offset)
        except OverflowError:
            return None
    return value


_PARSERS: Mapping[str, Callable[..., Any]] = {
    "DA": _parse_date,
    "TM": _parse_time,
    "DT": _parse_datetime,
}

_FORMATS = {
    "DA": "YYYYMMDD",
    "TM": "HH[MM[SS[.FFFFFF]]]",
    "DT": "YYYY[MM[DD[HH[MM[SS[.FFFFFF]]]]]][&ZZXX]",
}


def _range_test(keyword: str, vr: str, query: str) -> tuple[ValueTest, None]:
    """Single value and range matching for DA, TM and DT."""
    _reject_wildcards(keyword, vr, query)
    parse = _PARSERS[vr]
    hint = f"{vr} values look like {_FORMATS[vr]}; ranges are A-B, -B or A-"

    def bad(text: str, why: str = "is not valid") -> InvalidQueryError:
        return InvalidQueryError(f"{keyword}: {shown_value(keyword, text)} {why}", hint=hint)

    intervals: list[tuple[Any, Any]] = []
    for alt in query.split("\\"):
        alt = alt.strip()
        interval = _parse_interval(alt, vr, parse)
        if interval is None:
            raise bad(alt)
        lo, hi = interval
        if lo is not None and hi is not None and lo > hi and vr != "TM":
            raise bad(alt, "is an empty range (start after end)")
        intervals.append(interval)

    def test(value: Any) -> bool:
        bounds = _stored_bounds(vr, str(value))
        if bounds is None:
            return False  # a malformed stored value never matches a range
        point, end = bounds
        for lo, hi in intervals:
            if lo is not None and hi is not None and lo > hi:
                # TM range across midnight (PS3.4 C.2.2.2.5): 2300-0100.
                if end >= lo or point <= hi:
                    return True
            elif (lo is None or end >= lo) and (hi is None or point <= hi):
                return True
        return False

    return test, None


@lru_cache(maxsize=65536)
def _stored_bounds(vr: str, text: str) -> tuple[Any, Any] | None:
    """The interval a stored DA/TM/DT value covers; None when malformed.

    A stored TM/DT of partial precision ("10") covers an interval too and
    matches when it overlaps the query's. Cached: archives repeat dates a lot.
    """
    parse = _PARSERS[vr]
    lo = parse(text, upper=False)
    if lo is None:
        return None
    return lo, (lo if vr == "DA" else parse(text, upper=True))


def _parse_interval(text: str, vr: str, parse: Callable[..., Any]) -> tuple[Any, Any] | None:
    """A single value or range -> (lower bound, upper bound); None if invalid.

    A single value of partial precision is the interval it covers (TM
    ``1015`` is 10:15:00-10:15:59.999999). DT offsets contain '-', so every
    '-' is tried as the range separator; a valid range wins over a single
    value with an offset (``1000-1200`` is a range of years).
    """
    candidates: list[tuple[Any, Any]] = []
    reversed_ranges: list[tuple[Any, Any]] = []
    positions = (
        [i for i, ch in enumerate(text) if ch == "-"]
        if vr == "DT"
        else ([text.index("-")] if "-" in text else [])
    )
    for pos in positions:
        left, right = text[:pos].strip(), text[pos + 1 :].strip()
        if not left and not right:
            continue
        lo = parse(left, upper=False) if left else None
        hi = parse(right, upper=True) if right else None
        if (left and lo is None) or (right and hi is None):
            continue
        if vr == "DT" and lo is not None and hi is not None and lo > hi:
            reversed_ranges.append((lo, hi))
            continue  # maybe the '-' of an offset; try the other readings
        candidates.append((lo, hi))
    if candidates:
        return candidates[0]
    if vr == "DT" or "-" not in text:
        lo, hi = parse(text, upper=False), parse(text, upper=True)
        if lo is not None and hi is not None:
            return lo, hi
    # Let the caller report start-after-end distinctly from bad syntax.
    return reversed_ranges[0] if reversed_ranges else None


# --------------------------------------------------------------------------
# Criteria and the compiled filter
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class Criterion:
    """One compiled `keyword = query` condition."""

    keyword: str
    vr: str
    query: str = field(repr=False)  # may be a patient's name: not in reprs or tracebacks
    #: "universal", "empty", or "value" (single value, wildcard, range, list)
    kind: str
    #: the exact values a record must hold, when matching is exact and
    #: case-sensitive (UIDs, IDs): lets the index jump to a shard
    exact_values: tuple[str, ...] | None = field(repr=False)
    _test: ValueTest | None

    def matches_value(self, value: Any) -> bool:
        """True when a record's value for this keyword satisfies the criterion."""
        if self.kind == "universal":
            return True
        if _is_empty(value):
            return self.kind == "empty"
        if self.kind == "empty":
            return False
        assert self._test is not None
        if isinstance(value, (list, tuple)):
            return any(not _is_empty(v) and self._test(v) for v in value)
        return self._test(value)


def _compile_criterion(keyword: str, query: str) -> Criterion:
    vr = keyword_vr(keyword)
    if " or " in vr:  # e.g. "US or SS", "OB or OW": take the first
        vr = vr.split(" or ")[0]
    stripped = query.strip()
    if not stripped or stripped == "*":
        return Criterion(keyword, vr, query, "universal", None, None)
    if stripped == _EMPTY_VALUE_QUERY:
        return Criterion(keyword, vr, query, "empty", None, None)
    if vr == "SQ":
        raise InvalidQueryError(
            f"{keyword} is a sequence; sequence matching is not supported",
            hint="match on the attributes of the level instead",
        )
    if vr in _UNMATCHABLE_VRS:
        raise InvalidQueryError(
            f"{keyword} ({vr}) is binary and cannot be matched",
            hint="give it an empty value to ask for it as a return key only",
        )
    exact: tuple[str, ...] | None = None
    if vr == "UI":
        test, exact = _uid_test(keyword, vr, query)
    elif vr in ("DA", "TM", "DT"):
        test, exact = _range_test(keyword, vr, query)
    elif vr in _NUMERIC_INT_VRS or vr in _NUMERIC_FLOAT_VRS:
        test, exact = _numeric_test(keyword, vr, query)
    elif vr == "PN":
        _check_wildcard_value(keyword, query)
        test, exact = _pn_test(keyword, vr, query)
    elif vr in _STRING_VRS:
        _check_wildcard_value(keyword, query)
        test, exact = _string_test(keyword, vr, query)
    else:
        raise InvalidQueryError(f"{keyword} ({vr}) cannot be matched")
    return Criterion(keyword, vr, query, "value", exact, test)


class RecordFilter:
    """A compiled set of criteria; all of them must match (logical AND).

    >>> f = compile_filters({"PatientName": "müller*", "StudyDate": "20240101-"})
    >>> f.matches({"PatientName": "Müller^Hans", "StudyDate": "20240131"})
    True
    >>> f.keys
    ('PatientName', 'StudyDate')
    >>> compile_filters({"PatientID": "123"}).exact("PatientID")
    ['123']
    """

    def __init__(self, criteria: Iterable[Criterion]) -> None:
        self._all = {c.keyword: c for c in criteria}
        # Universal criteria match everything: no need to look at them.
        self._active = tuple(c for c in self._all.values() if c.kind != "universal")

    @property
    def keys(self) -> tuple[str, ...]:
        """Keywords that actually restrict the result (universal ones excluded)."""
        return tuple(c.keyword for c in self._active)

    @property
    def criteria(self) -> Mapping[str, Criterion]:
        """Every compiled criterion by keyword, universal ones included."""
        return MappingProxyType(self._all)

    def is_universal(self) -> bool:
        """True when every record matches (no restricting criterion)."""
        return not self._active

    def exact(self, keyword: str) -> list[str] | None:
        """The exact values `keyword` must equal (any of), or None.

        Set for single values and lists without wildcards of case-sensitive
        string VRs and UIDs (PatientID, StudyInstanceUID, SeriesInstanceUID,
        ...), so the index can look them up directly instead of scanning.
        None for PN (case-insensitive), ranges, wildcards, numbers, or when
        the keyword is not filtered on.
        """
        criterion = self._all.get(keyword)
        if criterion is None or criterion.exact_values is None:
            return None
        return list(criterion.exact_values)

    def matches(self, record: Record) -> bool:
        """True when `record` satisfies every criterion."""
        for criterion in self._active:
            if not criterion.matches_value(record.get(criterion.keyword)):
                return False
        return True

    __call__ = matches

    def __repr__(self) -> str:
        inner = ", ".join(f"{c.keyword}={shown_value(c.keyword, c.query)}" for c in self._active)
        return f"RecordFilter({inner})"


def compile_filters(criteria: Mapping[str, str]) -> RecordFilter:
    """Compile ``{keyword: query value}`` into a :class:`RecordFilter`.

    Keywords are validated against pydicom's dictionary (a tag or another
    case is accepted, see :func:`resolve_keyword`); the dictionary VR picks
    the matching kind. Raises :class:`InvalidQueryError` for an unknown keyword, an
    invalid value (bad date, start after end, wildcard in a UID) or a VR that
    cannot be matched.

    >>> f = compile_filters({"ModalitiesInStudy": "CT\\\\MR", "StudyDate": "20240101-20240331"})
    >>> f.matches({"ModalitiesInStudy": ["MR", "SR"], "StudyDate": "20240215"})
    True
    """
    compiled: list[Criterion] = []
    seen: set[str] = set()
    for key, query in criteria.items():
        keyword = resolve_keyword(key)
        if keyword in seen:
            raise InvalidQueryError(f"{keyword} is given more than once")
        seen.add(keyword)
        if not isinstance(query, str):
            raise InvalidQueryError(f"{keyword}: query value must be text, got {type(query).__name__}")
        compiled.append(_compile_criterion(keyword, query))
    return RecordFilter(compiled)
