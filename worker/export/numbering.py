"""Series numbers and free-text fields of what we write, so that two results of one study
differ in a viewer's series list and no text is cut mid-word."""

from __future__ import annotations

from pydicom import Dataset

#: Added to 100 x the source's SeriesNumber: source series 3 gives SEG 391 and SR 392.
SEG_OFFSET = 91
SR_OFFSET = 92
#: IS holds up to 2**31 - 1; the numbers used without (or with too large) a source number.
SEG_FALLBACK = 9901
SR_FALLBACK = 9902
_IS_MAX = 2**31 - 1


def derived_series_number(source: Dataset, offset: int, fallback: int) -> int:
    """A SEG's or SR's SeriesNumber: 100 x the source series' number + ``offset``, so that
    results sort beside their source and results of different series of a study differ."""
    try:
        number = int(source.get("SeriesNumber", None))
    except (TypeError, ValueError):
        return fallback
    derived = number * 100 + offset
    return derived if number >= 0 and derived <= _IS_MAX else fallback


def fit_words(text: str, limit: int = 64) -> str:
    """``text`` in ``limit`` characters (an LO's 64), cut at a word and marked "..."."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 3].rsplit(" ", 1)[0].rstrip(" ,;:-")
    return f"{cut}..."


#: Content Creator's Name (PN) of every SEG: the software, not a person (dcmqi warns when
#: it is absent).
CONTENT_CREATOR = "medseg^"
