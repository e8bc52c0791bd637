"""The HU-threshold lung method's card. It has no weights (``weights_sha256=()``): the card
applies to every run. Numbers from ``lung_ct_unet.json`` ``evaluation`` (its reference
columns) and ``docs/lung.md``."""

from __future__ import annotations

from worker.core.card import CardEvaluation, ModelCard

CARD = ModelCard(
    validation="reference-only",
    intended_input="Chest CT series in Hounsfield units (axial slices with positions)",
    intended_use=(
        "Left and right lung segmentation and volumes by a classical method; the reference "
        "the lung CT U-Net is trained on and the fallback when its weights are missing"
    ),
    weights_sha256=(),
    training_data=(),  # a classical method: nothing is trained
    evaluations=(
        CardEvaluation(
            data="6 held-out chest CT phantoms (seeds 2000-2005)",
            labels="phantom ground truth",
            metrics={
                "dice_left_mean": 0.9998,
                "dice_right_mean": 0.9997,
                "dice_left_min": 0.9995,
                "dice_right_min": 0.9995,
            },
        ),
        CardEvaluation(
            data="pyradiomics lung1 and lung2: two real chest CTs",
            labels="none: looked at, no expert contours",
            metrics={
                "lung2_volume_left_ml": 1609.4,
                "lung2_volume_right_ml": 2388.6,
                "lung1_volume_left_ml": 1106.1,
                "lung1_volume_right_ml": 1789.8,
            },
        ),
    ),
    failure_modes=(
        "dense lung (consolidation, effusion, fibrosis) above -320 HU is left out",
        "only the trachea and main bronchi are removed as airways",
        "where the lungs touch, left and right are split by erosion and regrown: the split "
        "can be uneven there",
    ),
)
