"""Every shipped model has a card, and each card describes the checkpoint that ships beside it
(the sha256 in the weights' JSON), so a retrained checkpoint cannot keep an old card."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import worker.models
from worker.core.card import STATUSES
from worker.core.registry import get_spec

MODELS = Path(worker.models.__file__).parent

#: model name -> (status, the checkpoints whose JSON names its weights; () for none)
EXPECTED = {
    "fetal-head-unet": ("validated-real", ("fetal_head/fetal_head_unet.json",)),
    "fetal-brain-unet": ("phantom-only", ("fetal_brain/fetal_brain_unet.json",)),
    "lung-ct-unet": ("reference-only", ("lung_ct/lung_ct_unet.json",)),
    "lung-ct-threshold": ("reference-only", ()),
    "lung-cxr": ("validated-real", ("lung_cxr/lung_cxr_unet.json",)),
}


def _sha(meta: str) -> str:
    value = json.loads((MODELS / meta).read_text())["sha256"]
    assert isinstance(value, str)
    return value


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_card_names_the_shipped_weights(name: str) -> None:
    card = get_spec(name).card
    assert card is not None, f"{name} has no model card"
    status, metas = EXPECTED[name]
    assert card.validation == status
    assert card.weights_sha256 == tuple(_sha(m) for m in metas)
    for meta in metas:
        assert card.status_for(_sha(meta)) == status
    assert card.status_for("0" * 64) == ("unvalidated" if metas else status)
    assert card.evaluations and card.failure_modes
    assert card.training_data or not metas  # only a method without weights trained on nothing
    assert all(c.validation in STATUSES for c in card.components)


def test_the_pneumonia_detector_has_its_own_status_for_its_own_weights() -> None:
    card = get_spec("lung-cxr").card
    assert card is not None
    detector = _sha("lung_cxr/pneumonia_frcnn.json")
    assert [c.name for c in card.components] == ["pneumonia-detector"]
    assert card.components[0].weights_sha256 == (detector,)
    assert card.component_status("pneumonia-detector", detector) == "phantom-only"
    assert card.component_status("pneumonia-detector", "0" * 64) == "unvalidated"
    assert card.component_status("no-such-part", detector) == "unvalidated"


def test_the_fetal_head_card_quotes_the_recorded_held_out_evaluation() -> None:
    card = get_spec("fetal-head-unet").card
    assert card is not None
    meta = json.loads((MODELS / "fetal_head/fetal_head_unet.json").read_text())
    held_out = meta["evaluation_held_out"]
    metrics = card.evaluations[0].metrics
    assert metrics["hc_abs_diff_mm_mean"] == held_out["hc_abs_diff_mm"]["mean"]
    assert metrics["dice_mean"] == held_out["dice"]["mean"]
    assert metrics["frames"] == held_out["frames"]
    assert meta["model_card"]["validation_status"] == card.validation
