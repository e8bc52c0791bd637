"""The chest X-ray model's card: both networks trained and tested on phantoms only (numbers
from ``docs/metrics/lung_cxr.json`` and ``docs/lung.md``). The pneumonia detector inside it
has a card entry of its own; its findings carry that status."""

from __future__ import annotations

from worker.core.card import CardEvaluation, ComponentCard, DataSource, ModelCard

CARD = ModelCard(
    validation="phantom-only",
    intended_input=(
        "Chest radiographs (CR or DX, PA or AP) whose Body Part Examined or Series "
        "Description names the chest"
    ),
    intended_use=(
        "Research and pipeline testing: lung field segmentation and areas, pneumonia-like "
        "opacities as findings. Not for clinical use"
    ),
    weights_sha256=("ce2622b4992084e7d549d02c154e3265ef7b2be8ef852176e0a6f6d8c1a2e2e8",),
    training_data=(
        DataSource(
            name="medseg chest radiograph phantoms",
            kind="phantom",
            description=(
                "lung U-Net: seeds 0-359 (324 train, 36 validation); detector: seeds 0-479 "
                "with 0-2 opacities (432 train, 48 validation)"
            ),
        ),
    ),
    evaluations=(
        CardEvaluation(
            data="100 held-out phantoms (seeds 500000-500099; CR and DX, 100 opacities)",
            labels="phantom ground truth",
            metrics={
                "dice_right_mean": 0.9929,
                "dice_left_mean": 0.9931,
                "dice_min": 0.9685,
                "area_error_percent_abs_mean": 0.4,
                "detector_ap50": 0.9241,
                "precision_at_0.5": 0.9072,
                "recall_at_0.5": 0.88,
            },
        ),
        CardEvaluation(
            data="RG1_UNCI.dcm (pydicom-data): one real CR chest film",
            labels="none: looked at, no ground truth",
            metrics={"lung_fraction_of_image": 0.2539, "findings_at_0.5": 2},
        ),
    ),
    failure_modes=(
        "on a real film the lung fields stop short of the right base and run into the soft "
        "tissue above the apices (domain gap)",
        "opacity findings on real films mean nothing clinically",
    ),
    components=(
        ComponentCard(
            "pneumonia-detector",
            "phantom-only",
            "Faster R-CNN trained from scratch on phantom opacities; AP@0.5 0.924 on 100 "
            "held-out phantoms, never evaluated on real films",
            weights_sha256=("713ab9d6c35cd18142ea794ac3513a296bb1fab4cf633e8bcf7b4da76efd5901",),
        ),
    ),
)
