"""The brain mask convention (docs/fetal-brain.md): a checkpoint states whether its outline is
the intracranial volume or the parenchyma; the SEG's Segment Description says which, and only
an intracranial volume is ranked in the intracranial volume reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from tests.support.brain_weights import served_as
from worker.models._nn.checkpoint import read_metadata
from worker.models.fetal_brain.convention import (
    INTRACRANIAL,
    PARENCHYMA,
    UNSTATED,
    VOLUME_LABELS,
    ConventionError,
    of_checkpoint,
    ranked,
    segment_kind,
)
from worker.models.fetal_brain.phantoms import make_fetal_brain_stack
from worker.models.fetal_brain.serve import DEFAULT_BRAIN_WEIGHTS

CANDIDATE = DEFAULT_BRAIN_WEIGHTS.parent / "candidates" / "fetal_brain_unet.pt"


def test_a_checkpoint_states_its_convention_or_is_unstated() -> None:
    assert of_checkpoint(read_metadata(DEFAULT_BRAIN_WEIGHTS)) == PARENCHYMA  # phantom-only 1.0.0
    assert of_checkpoint(read_metadata(CANDIDATE)) == INTRACRANIAL  # learnt from the atlas
    assert of_checkpoint({}) == UNSTATED
    with pytest.raises(ConventionError, match="mask_convention 'skull'"):
        of_checkpoint({"mask_convention": "skull"})


def test_each_convention_has_its_own_segment_description() -> None:
    described = {c: segment_kind(c).description for c in (INTRACRANIAL, PARENCHYMA, UNSTATED)}
    assert described[INTRACRANIAL].startswith("Intracranial: brain, ventricles, extra-axial CSF")
    assert "no extra-axial CSF" in described[PARENCHYMA]
    assert "not stated" in described[UNSTATED]
    assert {segment_kind(c).label for c in described} == {"Fetal brain"}
    assert all(len(d) <= 64 for d in described.values()), "Segment Description is an LO"


def test_only_an_intracranial_volume_is_ranked_by_its_stored_label() -> None:
    assert [c for c, label in VOLUME_LABELS.items() if ranked(label)] == [INTRACRANIAL]
    assert not ranked("Brain volume"), "results stored before the convention was stated"


def test_a_phantom_has_both_outlines() -> None:
    stack = make_fetal_brain_stack(820001)
    parenchyma, intracranial = stack.truth(PARENCHYMA), stack.truth(INTRACRANIAL)
    assert parenchyma is stack.brain and not (parenchyma & ~intracranial).any()
    ratio = intracranial.sum() / parenchyma.sum()
    assert 1.1 < ratio < 1.6, "the CSF shell: 1.5-4 mm around a 24-44 mm half-width"
    with pytest.raises(ValueError, match="not 'skull'"):
        stack.truth("skull")


def test_the_served_mask_says_its_convention_in_the_seg_and_the_sr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1.0.0 (parenchyma): described so, no intracranial z-score; the same weights stated
    intracranial: described so, and ranked in Ren 2022."""
    from worker.models.fetal_brain.mr_dicom import write_mr_stack
    from worker.pipeline.cache import ModelCache
    from worker.pipeline.run import run_series

    stack = make_fetal_brain_stack(820064, plane="TRA")  # held out, 21x192x192
    paths = write_mr_stack(stack, tmp_path / "mr")
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.StudyDate, ds.LastMenstrualDate = "20260611", "20251127"  # 28w0d
        ds.save_as(path, enforce_file_format=True)

    def served(label: str) -> tuple[str, dict[str, float], str]:
        result = run_series(paths, ModelCache("cpu"), tmp_path / label)
        outputs = {o.kind: Path(o.path) for o in result.outputs}
        seg = pydicom.dcmread(outputs["seg"])
        measured = {m.key: m.value for m in result.measurements}
        labels = {m.key: m.label for m in result.measurements}
        assert ranked(labels["brain_volume_ml"]) == ("brain_volume_z" in measured)
        return str(seg.SegmentSequence[0].SegmentDescription), measured, str(result.review)

    description, measured, review = served("parenchyma")
    assert description.startswith("Parenchyma") and "brain_volume_ml" in measured, review
    assert "brain_volume_z" not in measured and "gestational_age_by_dates_days" in measured

    with served_as(INTRACRANIAL, tmp_path / "stated", monkeypatch):
        description, measured, review = served("intracranial")
    assert description.startswith("Intracranial"), review
    assert np.isfinite(measured["brain_volume_z"]), review
