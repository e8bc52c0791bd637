"""The fetal brain model's card: its U-Net never saw a real fetal image (numbers from
``docs/metrics/fetal_brain_phantom_test.json`` and ``docs/fetal-brain.md``)."""

from __future__ import annotations

from worker.core.card import CardEvaluation, DataSource, ModelCard

CARD = ModelCard(
    validation="phantom-only",
    intended_input=(
        "Fetal MR stacks (single-shot T2-like, sagittal, coronal or transverse) whose Series "
        "Description or Body Part Examined matches MEDSEG_FETAL_BRAIN_MATCH"
    ),
    intended_use=(
        "Research and pipeline testing: fetal brain segmentation and brain volume. Not for "
        "clinical use: the network was trained and tested on synthetic stacks only"
    ),
    weights_sha256=("6afc743e622c7017d28a8d4f059fc0c2a91fae450e0f685541efcbf37c9e4e69",),
    training_data=(
        DataSource(
            name="medseg fetal-brain phantoms v1",
            kind="phantom",
            description=(
                "synthetic T2-like stacks, seeds 0-499: 18,636 training and 2,070 validation "
                "slices (worker/models/fetal_brain/phantoms.py)"
            ),
        ),
    ),
    evaluations=(
        CardEvaluation(
            data="100 held-out phantom stacks, seeds 800000-800099, per stack",
            labels="phantom ground truth",
            metrics={
                "dice_mean": 0.9985,
                "dice_sd": 0.0019,
                "iou_mean": 0.997,
                "sensitivity_mean": 0.9988,
                "specificity_mean": 1.0,
                "volume_abs_error_pct_mean": 0.17,
                "stacks": 100,
            },
        ),
        CardEvaluation(
            data=(
                "Colin27 adult T1 brain (ch2.nii.gz, Debian mricron-data), 181 axial 1 mm "
                "slices: a pipeline check on an adult template, not a fetal evaluation "
                "(benchmarks/fetal_brain_colin27.py)"
            ),
            labels="none (reference)",
            metrics={
                "dice_vs_ch2bet_t1": 0.276,
                "dice_vs_ch2bet_t1_inverted": 0.0,
                "volume_found_ml": 464,
                "volume_reference_ml": 1737,
            },
        ),
    ),
    failure_modes=(
        "fails on real fetal MR: on three clinical single-shot T2 stacks of one fetus "
        "(MIALSRTK sample data, CC0) Dice 0.139 and 1,001-1,428 mL where the manual masks hold "
        "152-160 mL; the quality gate flags all three (docs/fetal-brain.md)",
        "does not transfer to an adult T1 brain (Dice 0.276 on Colin27)",
        "its mask is the phantoms' brain parenchyma (no extra-axial CSF, mask_convention "
        "'parenchyma'), not the intracranial volume of the atlas and of manual clinical masks: "
        "the SEG says so and the volume is not ranked in the intracranial volume reference",
        "the classical baseline fails where the CSF rim is thinner than the blur or broken "
        "by motion (Dice 0.79 on the phantoms); the U-Net's own limits on real data are "
        "unmeasured",
    ),
)
