"""C-FIND identifiers: request data set -> :class:`Query`, index record -> response.

Character sets are where peers differ most, so this module decodes a request
with the data set's own Specific Character Set (with fallbacks for peers that
omit it or lie about it) and encodes each response in a character set that can
carry its values, verified by writing and reading the response back.

>>> from pydicom import Dataset
>>> ds = Dataset()
>>> ds.QueryRetrieveLevel = "STUDY"
>>> ds.PatientName = "Doe*"
>>> ds.StudyInstanceUID = ""
>>> q = parse_identifier(ds)
>>> q.level, dict(q.criteria), q.return_keys
('STUDY', {'PatientName': 'Doe*'}, ('PatientName', 'StudyInstanceUID'))
>>> rsp = build_response({"PatientName": "Doe^John", "StudyInstanceUID": "1.2.3"}, q)
>>> str(rsp.PatientName), rsp.StudyInstanceUID, rsp.QueryRetrieveLevel
('Doe^John', '1.2.3', 'STUDY')
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, BinaryIO, cast

from pydicom.charset import CUSTOMIZABLE_CHARSET_VR, convert_encodings, python_encoding
from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement, RawDataElement, convert_raw_data_element
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence as DicomSequence
from pydicom.valuerep import PersonName, format_number_as_ds

from pacsctl.dicom.matching import LEVELS, UNIQUE_KEY, RecordFilter, compile_filters
from pacsctl.errors import InvalidQueryError

__all__ = [
    "InvalidIdentifierError",
    "Query",
    "build_response",
    "parse_identifier",
]

UTF8 = "ISO_IR 192"
LATIN1 = "ISO_IR 100"
_ESC = 0x1B
# Attributes that steer the query rather than being keys of it.
_CONTROL_KEYWORDS = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})
_TEXT_VRS = frozenset(str(vr) for vr in CUSTOMIZABLE_CHARSET_VR)
_INT_VRS = frozenset({"IS", "US", "UL", "SS", "SL", "SV", "UV"})
_FLOAT_VRS = frozenset({"FL", "FD"})


class InvalidIdentifierError(InvalidQueryError):
    """A C-FIND request identifier that cannot be served (bad or missing level).

    The SCP answers it with a failure status (0xA900 / 0xC000).
    """


@dataclass(frozen=True)
class Query:
    """A decoded C-FIND request.

    ``criteria`` holds the keys with a non-empty value (decoded to ``str``;
    multiple values joined with a backslash, as :mod:`pacsctl.dicom.matching`
    expects); ``return_keys`` every keyword the request holds, empty or not, in
    tag order; ``charset`` the request's Specific Character Set as sent (empty
    when it had none).
    """

    level: str
    criteria: Mapping[str, str]
    return_keys: tuple[str, ...]
    charset: tuple[str, ...] = field(default=())

    def filter(self) -> RecordFilter:
        """The :class:`RecordFilter` for ``criteria`` (raises InvalidQueryError if invalid)."""
        return compile_filters(self.criteria)


# --------------------------------------------------------------------------
# Request -> Query
# --------------------------------------------------------------------------


def _charset_terms(ds: Dataset) -> list[str]:
    """The request's Specific Character Set as a list of defined terms."""
    item = ds.get_item(0x00080005)
    if item is None:
        return []
    if isinstance(item, RawDataElement):
        raw = item.value or b""
        terms = [t.strip() for t in raw.decode("ascii", "replace").split("\\")]
    else:
        value = item.value
        if value is None or value == "":
            return []
        terms = [str(t).strip() for t in (value if isinstance(value, (list, MultiValue)) else [value])]
    return terms if any(terms) else []


def _decodes(raw: bytes, term: str) -> bool:
    """True when `raw` decodes strictly with the Python codec of a defined term."""
    codec = python_encoding.get(term)
    if codec is None:
        return True  # unknown term: leave the decision to pydicom
    try:
        raw.decode(codec)
    except (UnicodeDecodeError, LookupError):
        return False
    return True


def _fallback_charset(raw: bytes) -> str:
    """Charset for non-ASCII bytes that the declared one cannot decode.

    UTF-8 first: random Latin-1 text is almost never valid UTF-8, while UTF-8
    read as Latin-1 silently gives mojibake ("MÃ¼ller").
    """
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return LATIN1
    return UTF8


def _raw_text_items(ds: Dataset) -> list[RawDataElement]:
    """Top-level raw elements whose VR is affected by the character set."""
    items: list[RawDataElement] = []
    for tag in ds.keys():
        item = ds.get_item(tag)
        if isinstance(item, RawDataElement) and _vr_of(item) in _TEXT_VRS:
            items.append(item)
    return items


def _vr_of(item: RawDataElement | DataElement) -> str:
    """VR of an element; implicit VR raw elements take the dictionary's."""
    if item.VR:
        return str(item.VR)
    try:
        vr = str(dictionary_VR(item.tag))
    except KeyError:
        return "UN"
    return vr.split(" or ")[0]


def _effective_charset(ds: Dataset, declared: list[str]) -> list[str]:
    """The charset to decode with; sniffed when the request declares none."""
    if declared:
        return declared
    non_ascii = [bytes(i.value) for i in _raw_text_items(ds) if i.value and not bytes(i.value).isascii()]
    if non_ascii and all(_fallback_charset(raw) == UTF8 for raw in non_ascii):
        return [UTF8]
    return [""]  # DICOM default repertoire; pydicom reads bytes >0x7F as Latin-1


def _decoded(ds: Dataset, tag: int, charset: list[str]) -> DataElement:
    """The element at `tag`, decoded with `charset` (or a fallback if it fails)."""
    item = ds.get_item(tag)
    if not isinstance(item, RawDataElement):
        return item  # already a Python value (data set built in memory)
    terms = charset
    raw = bytes(item.value or b"")
    if _vr_of(item) in _TEXT_VRS and not raw.isascii() and _ESC not in raw and not _decodes(raw, charset[0]):
        # Declared ISO_IR 192 but sent Latin-1 (or the reverse): decode what
        # was sent rather than replacement characters.
        terms = [_fallback_charset(raw)]
    # pydicom wants Python codec names here, not DICOM defined terms.
    return convert_raw_data_element(item, encoding=convert_encodings(terms), ds=ds)


def _scalar_text(value: Any) -> str:
    if isinstance(value, PersonName):
        return str(value)
    return str(value).strip()


def _value_text(value: Any) -> str:
    """A decoded element value as matching text; multiple values joined by '\\'."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple, MultiValue)):
        return "\\".join(_scalar_text(v) for v in value if v is not None)
    return _scalar_text(value)


def parse_identifier(ds: Dataset) -> Query:
    """Decode a C-FIND request identifier into a :class:`Query`.

    Text is decoded with the data set's own Specific Character Set. A request
    without one whose non-ASCII bytes are valid UTF-8 is read as UTF-8; a
    value the declared set cannot decode is read as UTF-8 or Latin-1, since
    peers mislabel. Sequences, private and group 0000/0002 elements are not
    criteria; sequences still count as return keys.

    Raises :class:`InvalidIdentifierError` when QueryRetrieveLevel is missing
    or not PATIENT, STUDY, SERIES or IMAGE.
    """
    level_item = ds.get_item(0x00080052)
    level = ""
    if level_item is not None:
        raw_level = level_item.value
        if isinstance(raw_level, bytes):
            raw_level = raw_level.decode("ascii", "replace")
        level = str(raw_level or "").strip().upper()
    if level not in LEVELS:
        raise InvalidIdentifierError(
            f"QueryRetrieveLevel {level!r} is not one of {', '.join(LEVELS)}"
            if level
            else "the identifier has no QueryRetrieveLevel",
            hint="C-FIND identifiers need (0008,0052) QueryRetrieveLevel",
        )

    declared = _charset_terms(ds)
    charset = _effective_charset(ds, declared)
    criteria: dict[str, str] = {}
    return_keys: list[str] = []
    for tag in ds.keys():
        if tag.group in (0x0000, 0x0002) or tag.is_private:
            continue
        keyword = keyword_for_tag(tag)
        if not keyword or keyword in _CONTROL_KEYWORDS:
            continue
        return_keys.append(keyword)
        elem = _decoded(ds, tag, charset)
        if elem.VR == "SQ" or isinstance(elem.value, (bytes, DicomSequence)):
            continue  # no sequence matching; binary values are not criteria
        text = _value_text(elem.value)
        if text:
            criteria[keyword] = text
    return Query(
        level=level,
        criteria=MappingProxyType(criteria),
        return_keys=tuple(return_keys),
        charset=tuple(declared),
    )


# --------------------------------------------------------------------------
# Record -> response identifier
# --------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None


def _one_value(value: Any, vr: str) -> Any:
    """One record value as a valid element value of `vr`, None if it cannot be."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if vr in _INT_VRS:
        number = _number(value)
        return int(number) if number is not None and number.is_integer() else None
    if vr == "DS":
        number = _number(value)
        if number is None:
            return None
        # format_number_as_ds keeps the string within DS's 16 characters.
        return str(int(number)) if number.is_integer() else format_number_as_ds(number)
    if vr in _FLOAT_VRS:
        return _number(value)
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN", "AT"):
        return None  # binary: index records carry no such values
    text = str(value)
    return text.strip() if vr not in ("LT", "ST", "UT") else text.rstrip()


def _element_value(value: Any, vr: str) -> Any:
    """A record value (scalar or list) as an element value of `vr`."""
    if vr == "SQ":
        return []
    if isinstance(value, (list, tuple)):
        values = [v for v in (_one_value(v, vr) for v in value) if v is not None]
        if not values:
            return None
        return values if len(values) > 1 else values[0]
    return _one_value(value, vr)


def _text_values(ds: Dataset) -> list[str]:
    """Values of the charset-dependent elements, as text."""
    texts = []
    for elem in ds:
        if elem.VR in _TEXT_VRS and elem.value not in (None, ""):
            texts.append(_value_text(elem.value))
    return texts


def _can_encode(texts: list[str], terms: Sequence[str]) -> bool:
    """Quick check that every character has a codec among `terms`.

    Necessary, not sufficient (ISO 2022 switching), hence the round trip after;
    it avoids asking pydicom to encode what it would replace with '?'.
    """
    codecs_ = []
    for term in terms:
        name = python_encoding.get(term or "ISO_IR 6")
        if name is None:
            return False
        codecs_.append("ascii" if term in ("", "ISO_IR 6", "ISO 2022 IR 6") else name)
    for text in texts:
        for ch in set(text):
            if not any(_encodes(ch, c) for c in codecs_):
                return False
    return True


def _encodes(ch: str, codec: str) -> bool:
    try:
        codecs.encode(ch, codec)
    except (UnicodeEncodeError, LookupError):
        return False
    return True


def _round_trips(ds: Dataset) -> bool:
    """Write `ds` (implicit VR little endian) to bytes, read it back, compare."""
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    back = read_dataset(
        cast(BinaryIO, DicomBytesIO(fp.getvalue())), True, True
    )  # a BinaryIO in all but its stub
    for elem in ds:
        if elem.VR not in _TEXT_VRS:
            continue
        if _value_text(back[elem.tag].value) != _value_text(elem.value):
            return False
    return True


def _normalize_charset(charset: str | Sequence[str] | None) -> list[str]:
    if charset is None:
        return []
    terms = [charset] if isinstance(charset, str) else [str(t) for t in charset]
    terms = [t.strip() for t in terms]
    return terms if any(terms) else []


def build_response(
    record: Mapping[str, Any],
    query: Query,
    request_charset: str | Sequence[str] | None = None,
) -> Dataset:
    """Build the C-FIND response identifier for one matching `record`.

    Holds exactly the query's return keys plus QueryRetrieveLevel and the
    level's unique key; values come from the record (missing -> empty;
    numbers formatted validly for IS/DS/US...). Specific Character Set:

    * all values ASCII: the request's set if it sent one, else none;
    * otherwise the request's set when it can carry every value (e.g.
      ``ISO_IR 100`` for ``Buc^Jérôme``), else ``ISO_IR 192`` (UTF-8).

    The chosen encoding is verified by writing the data set to bytes and
    reading it back. `request_charset` defaults to ``query.charset``.
    """
    requested = _normalize_charset(query.charset if request_charset is None else request_charset)
    ds = _assemble(record, query)
    texts = _text_values(ds)
    if all(t.isascii() for t in texts):
        if requested:
            ds.SpecificCharacterSet = requested if len(requested) > 1 else requested[0]
        return ds

    candidates: list[list[str]] = []
    if requested and _can_encode(texts, requested):
        candidates.append(requested)
    candidates.append([UTF8])
    for terms in candidates:
        # A fresh data set per attempt: PersonName caches its first encoding.
        ds = _assemble(record, query)
        ds.SpecificCharacterSet = terms if len(terms) > 1 else terms[0]
        if _round_trips(ds):
            return _assemble(record, query, terms)
    # UTF-8 carries every Unicode string; failing here is a bug, not data.
    raise RuntimeError("C-FIND response does not survive encoding in ISO_IR 192")


def _assemble(record: Mapping[str, Any], query: Query, charset: list[str] | None = None) -> Dataset:
    """The response data set for `record` (see :func:`build_response`)."""
    keywords = dict.fromkeys(["QueryRetrieveLevel", UNIQUE_KEY[query.level], *query.return_keys])
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset if len(charset) > 1 else charset[0]
    for keyword in keywords:
        if keyword == "SpecificCharacterSet":
            continue
        if keyword == "QueryRetrieveLevel":
            ds.QueryRetrieveLevel = query.level
            continue
        vr = str(dictionary_VR(keyword)).split(" or ")[0]
        ds.add_new(keyword, vr, _element_value(record.get(keyword), vr))
    return ds
