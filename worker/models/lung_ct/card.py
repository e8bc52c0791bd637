"""The lung CT U-Net's card: real CT, but labelled by the HU-threshold reference, not by
experts (numbers from ``lung_ct_unet.json`` ``evaluation`` and ``docs/lung.md``)."""

from __future__ import annotations

from worker.core.card import CardEvaluation, DataSource, ModelCard

CARD = ModelCard(
    validation="reference-only",
    intended_input=(
        "Chest CT series (axial slices with positions; Body Part Examined or Series "
        "Description naming the chest)"
    ),
    intended_use=(
        "Left and right lung segmentation and volumes, agreeing with the HU-threshold "
        "reference; not compared with expert contours"
    ),
    weights_sha256=("12bab6af94b90ef044141dce82cf5da0383670bfc292e83f49811ec7ee226f63",),
    training_data=(
        DataSource(
            name="medseg chest CT phantoms",
            kind="phantom",
            description="seeds 1000-1009, 40 slices each, labelled by the threshold reference",
        ),
        DataSource(
            name="pyradiomics 3.0.1 lung1",
            kind="real",
            description=(
                "one real chest CT (512 x 512 x 48), repeated 3 times, labelled by the "
                "threshold reference"
            ),
        ),
    ),
    evaluations=(
        CardEvaluation(
            data="pyradiomics lung2: one real chest CT (512 x 512 x 61), held out",
            labels="reference method (lung-ct-threshold), not expert contours",
            metrics={
                "dice_left": 0.983,
                "dice_right": 0.9876,
                "volume_left_ml": 1595.6,
                "volume_right_ml": 2392.4,
                "reference_volume_left_ml": 1609.4,
                "reference_volume_right_ml": 2388.6,
            },
        ),
        CardEvaluation(
            data="6 held-out chest CT phantoms (seeds 2000-2005)",
            labels="phantom ground truth",
            metrics={
                "dice_left_mean": 0.9979,
                "dice_right_mean": 0.9985,
                "dice_left_min": 0.9966,
                "dice_right_min": 0.9977,
            },
        ),
    ),
    failure_modes=(
        "has seen one real CT: pathology (consolidation, effusion, tumour) that the threshold "
        "reference misses is missed too",
        "the reference's errors (dense lung excluded, airways at the hila) are learnt as truth",
        "128 x 128 input: the boundary is resampled (the reference taken down to 128 and "
        "back keeps Dice 0.996-0.997 with itself on lung1 and lung2)",
    ),
)
