"""Issue 18 item 7: an invalid demographic value does not stop segmentation, and neither logs
nor job errors quote it (they name the attribute)."""

from __future__ import annotations

import logging
from pathlib import Path

import pydicom
import pytest

from tests.support.factories import chest_series
from worker.pipeline.cache import ModelCache
from worker.pipeline.run import run_series
from worker.runtime.jobs import describe_failure

pytestmark = pytest.mark.filterwarnings("ignore:Invalid value for VR")  # the setup writes it

BAD_BIRTH_DATE = "19901345"


def test_an_invalid_birth_date_is_emptied_and_the_series_segmented(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    paths = chest_series(tmp_path / "in", 0, slices=12)
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.PatientBirthDate = BAD_BIRTH_DATE
        ds.PatientSex = "X"
        ds.save_as(path)
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    result = run_series(paths, ModelCache("cpu"), tmp_path / "out")
    assert result.status == "succeeded"
    seg = pydicom.dcmread(tmp_path / "out" / "seg.dcm")
    assert seg.PatientBirthDate == "" and seg.PatientSex == ""
    assert "PatientBirthDate (0010,0030)" in caplog.text
    assert BAD_BIRTH_DATE not in caplog.text


def test_job_errors_name_no_quoted_value_but_uids() -> None:
    error = ValueError("Unable to convert '1990-13-45' to 'DA' object in '1.2.840.99.1'")
    assert describe_failure(error) == (
        "ValueError: Unable to convert '…' to '…' object in '1.2.840.99.1'"
    )


def test_missing_type2_attributes_are_written_empty(tmp_path: Path) -> None:
    """Issue 28 item 7: a modality that omits type 2 attributes (Patient's Birth Date, Study
    Time, Position Reference Indicator, even Patient ID) gets its series processed, and the
    SEG and SR carry them empty (dciodvfy: no errors)."""
    from tests.support.tools import dciodvfy_errors

    missing = ("PatientBirthDate", "StudyTime", "PositionReferenceIndicator", "PatientID")
    paths = chest_series(tmp_path / "in", 0, slices=12)
    for path in paths:
        ds = pydicom.dcmread(path)
        for keyword in missing:
            if keyword in ds:
                delattr(ds, keyword)
        ds.save_as(path)
    assert "PatientBirthDate" not in pydicom.dcmread(paths[0])
    result = run_series(paths, ModelCache("cpu"), tmp_path / "out")
    assert result.status == "succeeded"
    for name in ("seg.dcm", "sr.dcm"):
        written = pydicom.dcmread(tmp_path / "out" / name)
        assert all(
            written[k].value in ("", None) for k in missing if k != "PositionReferenceIndicator"
        )
        assert dciodvfy_errors(tmp_path / "out" / name) == []
    seg = pydicom.dcmread(tmp_path / "out" / "seg.dcm")
    assert seg.PositionReferenceIndicator in ("", None)
