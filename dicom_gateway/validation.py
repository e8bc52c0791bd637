"""Checks a received data set must pass before anything of it is written (file or row).

Every refusal names the attribute by keyword and tag, never its value (a value may be patient
data); the reason reaches the sender as the Error Comment of a permanent failure status.
"""

from __future__ import annotations

import string
from collections.abc import Iterable

from pydicom import Dataset
from pydicom.tag import Tag
from pydicom.valuerep import MAX_VALUE_LEN

#: UIDs longer than this are not DICOM (PS3.5 9.1) and do not fit the database's columns.
MAX_UID_LENGTH = MAX_VALUE_LEN["UI"]
_UID_CHARACTERS = frozenset(string.digits + ".")

#: The UIDs the gateway records and builds paths from.
RECORDED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


class DatasetRefusedError(ValueError):
    """A data set the gateway refuses for good; ``str()`` is the reason, free of values."""


def attribute_name(keyword: str) -> str:
    """``"StudyInstanceUID (0020,000D)"``: how errors name an attribute."""
    tag = Tag(keyword)
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
