"""Series numbers and free text of what we write."""

from __future__ import annotations

from pathlib import Path

import pydicom
from pydicom import Dataset

from tests.support.factories import chest_series
from worker.export.numbering import derived_series_number, fit_words
from worker.pipeline.cache import ModelCache
from worker.pipeline.run import run_series


def test_series_numbers_follow_the_source_series() -> None:
    source = Dataset()
    assert derived_series_number(source, 91, 9901) == 9901
    source.SeriesNumber = 3
    assert derived_series_number(source, 91, 9901) == 391
    source.SeriesNumber = 2**30
    assert derived_series_number(source, 91, 9901) == 9901


def test_text_is_cut_at_a_word() -> None:
    text = "Chest X-ray: lung fields (U-Net), areas, pneumonia opacities (detector)"
    cut = fit_words(text)
    assert len(cut) <= 64 and cut.endswith("...") and text.startswith(cut[:-3])
    assert text[len(cut) - 3] == " "  # the cut falls between words
    assert fit_words("short") == "short"


def test_two_series_of_one_study_get_distinct_seg_and_sr_numbers(tmp_path: Path) -> None:
    numbers = []
    for k, number in enumerate((2, 5)):
        paths = chest_series(tmp_path / f"in{k}", k, slices=8)
        for path in paths:
            ds = pydicom.dcmread(path)
            ds.SeriesNumber = number
            ds.save_as(path)
        result = run_series(paths, ModelCache("cpu"), tmp_path / f"out{k}")
        seg = pydicom.dcmread(next(o.path for o in result.outputs if o.kind == "seg"))
        sr = pydicom.dcmread(next(o.path for o in result.outputs if o.kind == "sr"))
        assert seg.ContentCreatorName and len(seg.ContentDescription) <= 64
        numbers.append((int(seg.SeriesNumber), int(sr.SeriesNumber)))
    assert numbers == [(291, 292), (591, 592)]
