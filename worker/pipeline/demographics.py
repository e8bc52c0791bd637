"""Demographic values that are not valid for their VR are emptied, not fatal.

The results (SEG, SR) copy the patient and study modules of the source images, and writing is
strict: one malformed Patient's Birth Date would fail every attempt of the job and quarantine
the series. These values play no part in segmentation, so an invalid one is left empty (all
are type 2 in the modules we write) and named, by keyword and tag, never by value.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable

from pydicom import Dataset
from pydicom.tag import Tag
from pydicom.valuerep import DA, DS, TM

logger = logging.getLogger(__name__)

_AGE = re.compile(r"^\d{3}[DWMY]$")


def _parses(kind: Callable[[str], object]) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            kind(value)
        except (TypeError, ValueError, OverflowError):
            return False
        return True

    return check


#: The values the written results copy, with what a valid one looks like.
_DATE = re.compile(r"^\d{8}$")  # pydicom also parses the retired ACR-NEMA form 1997.04.24


def _date(value: str) -> bool:
    return _DATE.match(value) is not None and _parses(DA)(value)


CHECKS: dict[str, Callable[[str], bool]] = {
    "PatientBirthDate": _date,
    "StudyDate": _date,
    "StudyTime": _parses(TM),
    "PatientSex": lambda value: value in ("M", "F", "O"),
    "PatientAge": lambda value: _AGE.match(value) is not None,
    "PatientSize": _parses(DS),
    "PatientWeight": _parses(DS),
}


def attribute_name(keyword: str) -> str:
    tag = Tag(keyword)
    return f"{keyword} ({tag.group:04X},{tag.element:04X})"


def _raw_text(ds: Dataset, keyword: str) -> str:
    """The value as text, read from the raw bytes when not converted yet: converting an
    invalid value makes pydicom log a warning that quotes it."""
    element = ds.get_item(keyword) if keyword in ds else None
    if element is None or element.value is None:
        return ""
    value = element.value
    if isinstance(value, bytes):
        return value.decode("latin-1").strip("\0 ")
    return str(value).strip()


def empty_invalid_demographics(datasets: Iterable[Dataset]) -> list[str]:
    """Empty, in place, every value of ``CHECKS`` that is not valid; returns the attributes
    emptied (named as ``attribute_name`` does), each once."""
    emptied: dict[str, None] = {}
    for ds in datasets:
        for keyword, valid in CHECKS.items():
            text = _raw_text(ds, keyword)
            if text and not valid(text):
                setattr(ds, keyword, None)
                emptied[attribute_name(keyword)] = None
    if emptied:
        logger.warning(
            "invalid value left empty in the results: %s",
            ", ".join(emptied),  # names only
        )
    return list(emptied)


#: Type 2 attributes of the modules the results copy (Patient, General Study, General Series,
#: General Equipment; Frame of Reference where the source has one): real modalities omit them,
#: the results must carry them, empty when unknown.
TYPE2: tuple[str, ...] = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
    "SeriesNumber",
    "Manufacturer",
)


def add_missing_type2(datasets: Iterable[Dataset]) -> list[str]:
    """Add, in place and empty, every ``TYPE2`` attribute a source lacks (and Position
    Reference Indicator beside a Frame of Reference UID); returns the keywords added, once."""
    added: dict[str, None] = {}
    for ds in datasets:
        wanted = [*TYPE2, "PositionReferenceIndicator"] if "FrameOfReferenceUID" in ds else TYPE2
        for keyword in wanted:
            if keyword not in ds:
                setattr(ds, keyword, None)
                added[keyword] = None
    if added:
        logger.info(
            "type 2 attributes missing from the source, written empty: %s", ", ".join(added)
        )
    return list(added)
