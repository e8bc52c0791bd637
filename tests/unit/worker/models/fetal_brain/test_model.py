"""Fetal brain MRI: golden held-out phantom stacks, DICOM path, outputs, CLIs' data layout."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from tests.support.tools import dciodvfy_errors
from worker.core.routing import route
from worker.core.tags import SeriesTags
from worker.models._nn import checkpoint
from worker.models.fetal_brain.baseline import baseline_mask
from worker.models.fetal_brain.data import load_training_set, metrics, nifti_pairs
from worker.models.fetal_brain.evaluate import evaluate_stacks
from worker.models.fetal_brain.mr_dicom import write_mr_stack
from worker.models.fetal_brain.phantoms import make_fetal_brain_stack, write_nifti_pair
from worker.models.fetal_brain.predict import clean_volume
from worker.models.fetal_brain.serve import DEFAULT_BRAIN_WEIGHTS, SPEC, accepts
from worker.pipeline.cache import ModelCache
from worker.pipeline.run import run_series

HELD_OUT = (820000, 820001, 820002)  # training used seeds 0-499
GOLDEN = (820012, 820025, 820035)  # held out too; 20-22 slices each (the suite's time)
PLANES = 820063  # held out too; 22 slices of 224x224 in each plane
MODELS = ModelCache("cpu")


def test_shipped_weights_are_versioned_and_labelled() -> None:
    meta = checkpoint.read_metadata(DEFAULT_BRAIN_WEIGHTS)
    assert meta["sha256"] == checkpoint.sha256_of(DEFAULT_BRAIN_WEIGHTS)
    assert "phantom" in meta["trained_on"] and meta["model"] == "fetal-brain-unet"


@pytest.mark.parametrize("plane", ["TRA", "COR", "SAG"])
def test_each_stack_plane_gives_a_volume_and_valid_outputs(tmp_path: Path, plane: str) -> None:
    stack = make_fetal_brain_stack(PLANES, plane=plane)
    result = run_series(write_mr_stack(stack, tmp_path / "in"), MODELS, tmp_path / "out")
    assert result.spec.name == "fetal-brain-unet"
    assert result.review == []  # the quality gate accepts a normal stack
    values = {m.key: m.value for m in result.measurements}
    assert values["brain_volume_ml"] == pytest.approx(stack.brain_volume_ml, rel=0.03)
    outputs = {o.kind: Path(o.path) for o in result.outputs}
    report = json.loads(outputs["json"].read_text())
    assert report["stack_plane"] == plane
    assert len(report["slice_areas_mm2"]) == len(stack.image)
    assert max(report["slice_areas_mm2"]) == pytest.approx(values["max_slice_area_mm2"])
    seg = pydicom.dcmread(outputs["seg"])
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "12738006"
    assert dciodvfy_errors(outputs["seg"]) == []
    assert dciodvfy_errors(outputs["sr"]) == []
    sr = hd.sr.srread(outputs["sr"])
    (group,) = sr.content.get_volumetric_roi_measurement_groups()
    in_sr = {m.name.value: (m.value, m.unit.value) for m in group.get_measurements()}
    assert in_sr["42798000"][1] == "mm2"  # the largest slice area, as in report.json
    assert in_sr["42798000"][0] == pytest.approx(values["max_slice_area_mm2"])


def test_golden_held_out_stacks_beat_the_baseline() -> None:
    stacks = [
        (str(seed), st.image, st.brain, (st.pixel_mm, st.pixel_mm, st.slice_mm))
        for seed in GOLDEN
        for st in [make_fetal_brain_stack(seed)]
    ]
    summary = evaluate_stacks(stacks, DEFAULT_BRAIN_WEIGHTS, "cpu")
    assert summary["unet_dice"][0] >= 0.95
    assert summary["unet_dice"][0] > summary["baseline_dice"][0]
    assert summary["unet_volume_abs_error_pct"][0] <= 3.0


def test_clean_up_keeps_the_largest_component_and_fills_holes() -> None:
    prob = np.zeros((5, 20, 20), np.float32)
    prob[1:4, 4:14, 4:14] = 0.9
    prob[2, 8, 8] = 0.1  # a hole
    prob[0, 18, 18] = 0.9  # an isolated blob
    mask = clean_volume(prob)
    cube = np.zeros_like(mask)
    cube[1:4, 4:14, 4:14] = True
    assert (mask == cube).all()


def test_nifti_pairs_round_trip_into_training_slices(tmp_path: Path) -> None:
    stack = make_fetal_brain_stack(HELD_OUT[1])
    write_nifti_pair(stack, tmp_path, "case1")
    ((name, image, mask, spacing),) = list(nifti_pairs(tmp_path))
    assert name == "case1" and image.shape == stack.image.shape
    assert (mask == stack.brain).all()
    assert spacing == pytest.approx((stack.pixel_mm, stack.pixel_mm, stack.slice_mm), rel=1e-5)
    images, masks = load_training_set(tmp_path)
    assert images.shape == masks.shape == (len(stack.image), 256, 256)


def test_baseline_finds_most_of_the_brain_on_an_easy_stack() -> None:
    stack = make_fetal_brain_stack(HELD_OUT[2])
    assert metrics(baseline_mask(stack.image.astype(np.float32)), stack.brain)["specificity"] > 0.95


def test_routing_is_a_configurable_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.core.settings import get_settings

    assert accepts(SeriesTags.of("MR", series_description="Fetal brain SSFSE COR"))
    assert not accepts(SeriesTags.of("MR", series_description="Brain T1 MPRAGE"))  # adult
    assert not accepts(SeriesTags.of("CT", series_description="FETAL"))
    spec = route(SeriesTags.of("MR", body_part_examined="FETUS"))
    assert spec is not None and spec.name == SPEC.name and spec.queue == "gpu"
    monkeypatch.setenv("MEDSEG_FETAL_BRAIN_MATCH", "FOETAL_HEAD")
    get_settings.cache_clear()
    try:
        assert not accepts(SeriesTags.of("MR", series_description="Fetal brain"))
        assert accepts(SeriesTags.of("MR", series_description="foetal_head t2"))
    finally:
        get_settings.cache_clear()


def test_phantom_pairs_are_written_under_either_convention(tmp_path: Path) -> None:
    """``medseg phantoms fetal-brain --convention``: the parenchyma by default (the default
    weights' outline), the intracranial volume on request."""
    from worker.cli.main import main

    for convention in ("parenchyma", "intracranial"):
        out = tmp_path / convention
        argv = ["phantoms", "fetal-brain", "--out", str(out), "--start", "7", "--count", "1"]
        assert (
            main([*argv, "--convention", convention] if convention != "parenchyma" else argv) == 0
        )
        ((_, _, mask, _),) = list(nifti_pairs(out))
        assert (mask == make_fetal_brain_stack(7).truth(convention)).all()
