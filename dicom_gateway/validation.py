"""Checks a received data set must pass before anything of it is written (file or row).

Every refusal names the attribute by keyword and tag, never its value (a value may be patient
data); the reason reaches the sender as the Error Comment of a permanent failure status.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from pydicom import Dataset
from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import RawDataElement
from pydicom.tag import BaseTag, Tag
from pydicom.valuerep import MAX_VALUE_LEN

#: UIDs longer than this are not DICOM (PS3.5 9.1) and do not fit the database's columns.
MAX_UID_LENGTH = MAX_VALUE_LEN["UI"]
_UID_CHARACTERS = frozenset(string.digits + ".")

#: The UIDs the gateway records and builds paths from.
RECORDED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


class DatasetRefusedError(ValueError):
    """A data set the gateway refuses for good; ``str()`` is the reason, free of values."""


_UNDEFINED_LENGTH = 0xFFFFFFFF
_PIXEL_DATA = BaseTag(0x7FE00010)


def attribute_name(keyword_or_tag: str | int) -> str:
    """``"StudyInstanceUID (0020,000D)"``: how errors name an attribute (never its value)."""
    tag = Tag(keyword_or_tag)
    keyword = keyword_for_tag(tag) or "unknown attribute"
    return f"{keyword} ({tag.group:04X},{tag.element:04X})"


def uid_problem(value: str) -> str | None:
    """Why ``value`` is not a usable UID, or None. Tolerant where senders commonly are not
    strict (leading zeros in a component), strict where it matters (length, characters)."""
    if not value:
        return "empty UID"
    if len(value) > MAX_UID_LENGTH:
        return f"UID of {len(value)} characters, over {MAX_UID_LENGTH}"
    if not set(value) <= _UID_CHARACTERS or value.startswith(".") or value.endswith("."):
        return "UID with characters other than digits and dots"
    return None


def check_uids(ds: Dataset, keywords: Iterable[str] = RECORDED_UIDS) -> None:
    """Raise ``DatasetRefusedError`` naming the first of ``keywords`` that is not a valid UID."""
    for keyword in keywords:
        problem = uid_problem(str(ds.get(keyword, "") or "").strip("\0 "))
        if problem is not None:
            raise DatasetRefusedError(f"{attribute_name(keyword)}: {problem}")


def check_lengths(ds: Dataset, encoded_length: int) -> None:
    """Raise when a top-level element's length runs past the end of the data set (a data set
    cut short, or a damaged length). ``ds`` must be freshly decoded: elements already read
    (converted from their raw form) are not checked; ``encoded_length`` is the data set's size
    in bytes, against which values not read (deferred) are checked."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag, keep_deferred=True)  # never read a deferred value here
        if not isinstance(raw, RawDataElement) or raw.length == _UNDEFINED_LENGTH:
            continue
        if raw.value is not None:
            complete = len(raw.value) == raw.length
        else:
            complete = raw.value_tell + raw.length <= encoded_length
        if not complete:
            raise DatasetRefusedError(f"{attribute_name(tag)}: length past the end of the data")


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DatasetRefusedError(f"{attribute_name(keyword)}: missing or not a number") from None


def check_pixel_length(ds: Dataset) -> None:
    """Raise when native (not encapsulated) Pixel Data is shorter than Rows x Columns x
    Samples per Pixel x Number of Frames x Bits Allocated say it must be."""
    raw = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if raw is None:
        return
    if isinstance(raw, RawDataElement):
        length = raw.length
    else:
        length = len(raw.value) if raw.value is not None else 0
    if length == _UNDEFINED_LENGTH:
        return  # encapsulated: fragments, checked by the decoder
    pixels = (
        _int(ds, "Rows")
        * _int(ds, "Columns")
        * _int(ds, "SamplesPerPixel", 1)
        * max(_int(ds, "NumberOfFrames", 1), 1)
    )
    expected = (pixels * _int(ds, "BitsAllocated") + 7) // 8
    if length < expected:
        raise DatasetRefusedError(
            f"{attribute_name(_PIXEL_DATA)}: {length} bytes, image needs {expected}"
        )
