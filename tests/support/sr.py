"""Reading back what an SR written in a test says."""

from __future__ import annotations

import pydicom


def sr_numbers(sr: pydicom.Dataset) -> dict[str, float]:
    """{concept code: numeric value} of every NUM item of the SR's content tree."""
    found: dict[str, float] = {}
    stack = list(sr.ContentSequence)
    while stack:
        item = stack.pop()
        stack += list(item.get("ContentSequence", []))
        if item.ValueType == "NUM":
            code = item.ConceptNameCodeSequence[0].CodeValue
            found[code] = float(item.MeasuredValueSequence[0].NumericValue)
    return found
