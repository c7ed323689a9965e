"""The safe private attributes of `--keep-safe-private` (PS3.15 E.3.10) and their creator checks.

A private element (gggg,xxee) is kept only when it is on `SAFE_PRIVATE` and its private creator
(gggg,00xx) in the same data set is exactly the creator listed for it: the same element number
means something else under another vendor's creator, so the number alone proves nothing. Every
entry is a numeric acquisition parameter from PS3.15 Table E.3.10-1 that cannot hold a name;
text-valued entries of that table are left out on purpose (the residual scan covers what an
option keeps, but removing is safer than scanning). Private creators no kept element uses go.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydicom.dataset import Dataset

# (private creator, group, element byte) -> what it holds.
SAFE_PRIVATE: dict[tuple[str, int, int], str] = {
    ("SIEMENS MR HEADER", 0x0019, 0x0B): "slice measurement duration",
    ("SIEMENS MR HEADER", 0x0019, 0x0C): "B value",
    ("SIEMENS MR HEADER", 0x0019, 0x0D): "diffusion directionality",
    ("SIEMENS MR HEADER", 0x0019, 0x0E): "diffusion gradient direction",
    ("SIEMENS MR HEADER", 0x0019, 0x27): "B matrix",
    ("GEMS_PARM_01", 0x0043, 0x39): "slop_int_6 (diffusion b value)",
    ("GEMS_ACQU_01", 0x0019, 0xBB): "user data 15 (diffusion gradient direction)",
    ("GEMS_ACQU_01", 0x0019, 0xBC): "user data 16 (diffusion gradient direction)",
    ("GEMS_ACQU_01", 0x0019, 0xBD): "user data 17 (diffusion gradient direction)",
    ("PHILIPS IMAGING DD 001", 0x2001, 0x03): "diffusion B-factor",
    ("PHILIPS IMAGING DD 001", 0x2001, 0x04): "diffusion direction",
    ("Philips MR Imaging DD 001", 0x2005, 0xB0): "diffusion direction RL",
    ("Philips MR Imaging DD 001", 0x2005, 0xB1): "diffusion direction AP",
    ("Philips MR Imaging DD 001", 0x2005, 0xB2): "diffusion direction FH",
}
_SAFE = {(creator.strip(), group, byte) for creator, group, byte in SAFE_PRIVATE}


def _creator(ds: Dataset, group: int, block: int) -> str | None:
    elem = ds.get((group << 16) | block)
    if elem is None or elem.value is None:
        return None
    return str(elem.value).strip()


def is_safe(ds: Dataset, tag: int) -> bool:
    """Whether the private element `tag` of `ds` may stay under --keep-safe-private. A private
    creator element is provisionally kept (`drop_unused_creators` removes it if unused)."""
    group, element = tag >> 16, tag & 0xFFFF
    if 0x0010 <= element <= 0x00FF:
        return True
    block = element >> 8
    if block < 0x10:
        return False
    creator = _creator(ds, group, block)
    return creator is not None and (creator, group, element & 0xFF) in _SAFE


def drop_unused_creators(ds: Dataset, kept: Iterable[int]) -> None:
    """Remove the private creator elements of `ds` whose block holds no kept data element."""
    used = {(tag >> 16, (tag & 0xFFFF) >> 8) for tag in kept if (tag & 0xFFFF) > 0x00FF}
    for tag in [t for t in ds.keys() if int(t) >> 16 & 1 and 0x0010 <= int(t) & 0xFFFF <= 0x00FF]:
        if (int(tag) >> 16, int(tag) & 0xFF) not in used:
            del ds[tag]
