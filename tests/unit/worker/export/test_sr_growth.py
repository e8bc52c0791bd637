"""Issue 31: the GA by dates (LMP) and where a measurement stands in its growth reference are
in the SR, with codes from PS3.16 as pydicom's dictionary has them: LN 11885-1 "Gestational
Age by LMP" in a group of its own (not measured on the images: no finding site, no
algorithm), and the fetal brain volume's z-score (Ren 2022) and the HC's z-score and centile
(INTERGROWTH-21st) as the statistical properties of the measurement they rank (TID 311, children of
that measurement: DCM 121416 "Z-Score of measurement", 121415 "Percentile Ranking of
measurement", the population and its authority as text). Read back by highdicom and
pydicom, dciodvfy zero errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom import Dataset
from pydicom.sr.codedict import codes

from tests.support.brain_weights import served_as
from tests.support.tools import dciodvfy_errors
from worker.models.fetal_brain.convention import INTRACRANIAL
from worker.models.fetal_brain.mr_dicom import write_mr_stack
from worker.models.fetal_brain.phantoms import make_fetal_brain_stack
from worker.models.fetal_head.us_dicom import write_us_phantom
from worker.pipeline.cache import ModelCache
from worker.pipeline.run import run_series

MODELS = ModelCache("cpu")
STUDY_DATE = "20260611"
HELD_OUT = 820064  # a fetal brain phantom seed the model was not trained on (0-499), 21x192x192


def _dated(paths: list[Path], lmp: str) -> list[Path]:
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.StudyDate, ds.LastMenstrualDate = STUDY_DATE, lmp
        ds.save_as(path, enforce_file_format=True)
    return paths


def _items(items: list[Dataset], parent: str = "") -> Iterator[tuple[str, Dataset]]:
    """(concept code of the parent item, item) for every item of the content tree."""
    for item in items:
        yield parent, item
        code = (
            item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item else ""
        )
        yield from _items(list(item.get("ContentSequence", [])), code)


def _num(item: Dataset) -> tuple[float, str]:
    value = item.MeasuredValueSequence[0]
    return float(value.NumericValue), str(value.MeasurementUnitsCodeSequence[0].CodeValue)


def _read(path: Path) -> tuple[dict[str, list[tuple[str, Dataset]]], hd.sr.Comprehensive3DSR]:
    assert dciodvfy_errors(path) == []
    sr = pydicom.dcmread(path)
    found: dict[str, list[tuple[str, Dataset]]] = {}
    for parent, item in _items(list(sr.ContentSequence)):
        if "ConceptNameCodeSequence" in item:
            found.setdefault(item.ConceptNameCodeSequence[0].CodeValue, []).append((parent, item))
    return found, hd.sr.srread(path)


def _statistics(found: dict[str, list[tuple[str, Dataset]]]) -> dict[str, tuple[str, object]]:
    """{code: (parent measurement's code, value)} of the z-score, centile, population
    description and reference authority items, each once in the report."""
    shown: dict[str, tuple[str, object]] = {}
    for code in ("121416", "121415", "121405", "121406"):
        for parent, item in found.get(code, []):
            assert code not in shown, f"{code} twice"
            value = _num(item) if item.ValueType == "NUM" else str(item.TextValue)
            shown[code] = (parent, value)
    return shown


def _dating_group(sr: hd.sr.Comprehensive3DSR) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    (group,) = [
        g
        for g in sr.content.get_image_measurement_groups()
        if g.tracking_identifier == "Gestational age by dates"
    ]
    return group


def test_the_fetal_head_sr_has_the_ga_by_dates_and_the_hc_standing(tmp_path: Path) -> None:
    phantom = write_us_phantom(tmp_path / "us.dcm", 200032)
    paths = _dated([phantom.path], "20251225")  # 24w0d on the study date
    result = run_series(paths, MODELS, tmp_path / "out")
    measured = {m.key: m.value for m in result.measurements}
    assert measured["gestational_age_by_dates_days"] == 168.0
    found, sr = _read(Path({o.kind: o.path for o in result.outputs}["sr"]))

    (ga,) = _dating_group(sr).get_measurements()
    assert (ga.name.value, ga.name.scheme_designator) == ("11885-1", "LN")
    assert (ga.value, ga.unit.value) == (168.0, "d")
    assert ga.finding_sites == []
    children = {i.ConceptNameCodeSequence[0].CodeValue for i in ga[0].get("ContentSequence", [])}
    assert "111001" not in children  # no Algorithm Name: it is not measured by the model

    hc = "11984-2"
    statistics = _statistics(found)
    assert statistics["121416"] == (hc, (pytest.approx(measured["head_circumference_z"]), "1"))
    assert statistics["121415"] == (
        hc,
        (pytest.approx(measured["head_circumference_centile"]), "%"),
    )
    parent, description = statistics["121405"]  # Population Description
    assert parent == hc and "INTERGROWTH-21st fetal growth standard" in str(description)
    assert statistics["121406"] == (hc, "INTERGROWTH-21st (Papageorghiou et al., Lancet 2014)")


def test_the_fetal_brain_sr_has_the_ga_by_dates_and_the_volume_z_score(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights whose mask is the intracranial volume (the reference's); 1.0.0's parenchymal
    mask is not ranked (tests/unit/worker/models/fetal_brain/test_convention.py)."""
    stack = make_fetal_brain_stack(HELD_OUT, plane="TRA")
    paths = _dated(write_mr_stack(stack, tmp_path / "mr"), "20251127")  # 28w0d
    with served_as(INTRACRANIAL, tmp_path / "weights", monkeypatch):
        result = run_series(paths, ModelCache("cpu"), tmp_path / "out")
    measured = {m.key: m.value for m in result.measurements}
    assert measured["gestational_age_by_dates_days"] == 196.0
    assert "brain_volume_z" in measured, result.review
    found, sr = _read(Path({o.kind: o.path for o in result.outputs}["sr"]))

    (ga,) = _dating_group(sr).get_measurements()
    assert (ga.name.value, ga.value, ga.unit.value) == ("11885-1", 196.0, "d")
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    volume = next(m for m in group.get_measurements() if m.name == codes.SCT.Volume)
    assert volume.value == pytest.approx(measured["brain_volume_ml"])
    statistics = _statistics(found)
    assert statistics["121416"] == ("118565006", (pytest.approx(measured["brain_volume_z"]), "1"))
    parent, description = statistics["121405"]
    assert parent == "118565006" and "completed week 28" in str(description)
    assert "mean 246.80 mL, SD 15.27 mL" in str(description)  # Ren 2022 Table 1, week 28
    assert "Front Neurosci 2022;16:886083" in str(statistics["121406"][1])


def test_without_a_last_menstrual_date_nothing_is_dated(tmp_path: Path) -> None:
    phantom = write_us_phantom(tmp_path / "us.dcm", 200032)
    result = run_series([phantom.path], MODELS, tmp_path / "out")
    found, sr = _read(Path({o.kind: o.path for o in result.outputs}["sr"]))
    assert not {"11885-1", "121416", "121415", "121404"} & set(found)
    assert all(
        g.tracking_identifier != "Gestational age by dates"
        for g in sr.content.get_image_measurement_groups()
    )
