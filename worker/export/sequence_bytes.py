"""A dataset's sequences, encoded byte for byte as pydicom would, for ``save_atomic``.

pydicom's writer spends some 35 µs on each data element (the encodings looked up again, every
nested item checked for ambiguous VRs at each level above it, a buffer per element). A
300-slice chest CT's SEG holds 540 per-frame functional group items of about 10,000 elements
(0.36 s of the SEG's 0.38 s save on a 2-core AMD EPYC, Zen 3); an SR's content tree is a few
hundred items. The items hold a few value representations (codes, UIDs, numbers, text);
``encode_items`` writes those in explicit VR little endian with the lengths and padding pydicom
writes, and gives up (None) on anything else, which pydicom then writes as before.
tests/unit/worker/export/test_sequence_bytes.py holds the files equal, byte for byte, to
pydicom's own for every model's SEG and SR.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator, Sequence

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filewriter import correct_ambiguous_vr
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

_ITEM = struct.pack("<HH", 0xFFFE, 0xE000)
_ITEM_END = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
_SEQUENCE_END = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
_UNDEFINED = 0xFFFFFFFF
_NUMBERS = {"US": "H", "UL": "L", "SS": "h", "SL": "l", "FL": "f", "FD": "d"}
#: Written as ASCII (pydicom: ``write_string``, or ``write_text`` with the default character
#: set); a value that is not ASCII gives up.
_STRINGS = {"AE", "AS", "CS", "DA", "DT", "LO", "LT", "SH", "ST", "TM", "UC", "UR", "UT"}


class _UnsupportedError(Exception):
    """Something pydicom must write itself."""


def _as_written(number: object) -> str:
    original = getattr(number, "original_string", None)
    return str(number) if original is None else str(original)


def _number_string(value: object) -> bytes:
    """DS and IS: the string each number was read or made with."""
    values: Sequence[object] = value if isinstance(value, MultiValue | list | tuple) else [value]
    text = "\\".join(_as_written(v) for v in values)
    if len(text) % 2:
        text += " "
    return text.encode("ascii")


def _string(value: object, padding: str) -> bytes:
    if isinstance(value, MultiValue | list | tuple):
        if not all(isinstance(v, str) for v in value):
            raise _UnsupportedError
        value = "\\".join(value)
    text = value
    if not isinstance(text, str) or not text.isascii():
        raise _UnsupportedError
    if len(text) % 2:
        text += padding
    return text.encode("ascii")


def _numbers(value: object, code: str) -> bytes:
    if isinstance(value, MultiValue | list | tuple):
        return struct.pack(f"<{len(value)}{code}", *value)
    return struct.pack(f"<{code}", value)


def _value(element: DataElement) -> bytes:
    vr, value = element.VR, element.value
    if element.is_empty:
        return b""
    if vr in _NUMBERS:
        return _numbers(value, _NUMBERS[vr])
    if vr in ("DS", "IS"):
        return _number_string(value)
    if vr == "UI":
        return _string(value, "\0")
    if vr in _STRINGS:
        return _string(value, " ")
    raise _UnsupportedError  # PN, binary values, ambiguous VRs


def _element(element: DataElement | RawDataElement) -> bytes:
    if not isinstance(element, DataElement) or element.is_buffered:
        raise _UnsupportedError
    tag = struct.pack("<HH", element.tag.group, element.tag.element)
    if element.VR == "SQ":
        items = _items(element.value)
        if element.is_undefined_length:
            return tag + struct.pack("<2sHL", b"SQ", 0, _UNDEFINED) + items + _SEQUENCE_END
        return tag + struct.pack("<2sHL", b"SQ", 0, len(items)) + items
    value = _value(element)
    if element.VR in EXPLICIT_VR_LENGTH_32:
        return tag + struct.pack("<2sHL", element.VR.encode(), 0, len(value)) + value
    if len(value) > 0xFFFF:
        raise _UnsupportedError  # pydicom writes it as UN, with a warning
    return tag + struct.pack("<2sH", element.VR.encode(), len(value)) + value


def _item(item: Dataset) -> bytes:
    if "SpecificCharacterSet" in item:
        raise _UnsupportedError
    tags: list[BaseTag] = sorted(item.keys())
    body = b"".join(
        _element(item.get_item(tag))
        for tag in tags
        if not (tag.element == 0 and tag.group > 6)  # no retired group lengths
    )
    if getattr(item, "is_undefined_length_sequence_item", False):
        return _ITEM + struct.pack("<L", _UNDEFINED) + body + _ITEM_END
    return _ITEM + struct.pack("<L", len(body)) + body


def _items(items: Sequence[Dataset]) -> bytes:
    return b"".join(_item(item) for item in items)


def encode_items(items: Sequence[Dataset]) -> bytes | None:
    """The items as pydicom writes them in explicit VR little endian, or None where one holds
    something this does not write (pydicom then writes the sequence)."""
    try:
        return _items(items)
    except (_UnsupportedError, struct.error, TypeError, ValueError):
        return None  # pydicom writes it, or says what is wrong with it


def _explicit_little(ds: Dataset) -> bool:
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    return syntax is not None and syntax.is_little_endian and not syntax.is_implicit_VR


def _sequences(ds: Dataset) -> list[DataElement]:
    """The top-level sequences worth encoding here: parsed, of defined length, not empty."""
    found = []
    tags: list[BaseTag] = sorted(ds.keys())  # iterating a Dataset would parse raw elements
    for tag in tags:
        element = ds.get_item(tag, keep_deferred=True)
        if (
            isinstance(element, DataElement)
            and element.VR == "SQ"
            and not element.is_undefined_length
            and len(element.value) > 0
        ):
            found.append(element)
    return found


@contextlib.contextmanager
def pre_encoded(ds: Dataset) -> Iterator[None]:
    """While saving ``ds``: each of its top-level sequences that ``encode_items`` writes as
    encoded bytes, which pydicom writes as they are; the rest is pydicom's. Left to pydicom
    altogether unless the dataset is explicit VR little endian.

    pydicom's save first resolves the ambiguous VRs of a dataset it did not read, all levels
    down (a SEG's Pixel Data is "OB or OW" until then); with the encoding set as if read it
    would skip that, so its correction is run here first, as the save would have."""
    sequences = _sequences(ds) if _explicit_little(ds) else []
    if not sequences:
        yield
        return
    correct_ambiguous_vr(ds, True)
    encoded = [(element, encode_items(element.value)) for element in sequences]
    swapped = [(element, raw) for element, raw in encoded if raw is not None]
    if not swapped:
        yield
        return
    read = ds.original_encoding
    read_charset = ds.original_character_set
    try:
        for element, raw in swapped:
            ds[element.tag] = RawDataElement(element.tag, "SQ", len(raw), raw, 0, False, True)
        # As if read in this encoding: pydicom writes a raw element's bytes as they are rather
        # than decoding it again to re-encode it.
        ds.set_original_encoding(False, True, ds._character_set)
        yield
    finally:
        for element, _ in swapped:
            ds[element.tag] = element
        ds.set_original_encoding(read[0], read[1], read_charset)
