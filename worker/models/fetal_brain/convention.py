"""Which outline a fetal brain mask follows, as a checkpoint states it (its JSON's
``mask_convention``), and what the SEG and the SR say for each (docs/fetal-brain.md, "The brain
mask convention").

- ``intracranial``: brain, ventricles and the extra-axial CSF up to the inner table of the
  skull: the atlas' masks, the clinical validation masks, and what ``train_synth`` learns;
- ``parenchyma``: brain tissue and ventricles, no extra-axial CSF: the phantoms' ``brain``,
  and so the phantom-only 1.0.0;
- ``unstated``: a checkpoint whose JSON does not say. Its volume is reported, but not ranked
  in the intracranial volume reference, since a parenchymal mask would read low there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # phantoms.py imports this module and travels with numpy and scipy alone
    from worker.export.outputs import SegmentKind

INTRACRANIAL = "intracranial"
PARENCHYMA = "parenchyma"
UNSTATED = "unstated"
#: What a checkpoint may state, and what a phantom's truth can be drawn as.
CONVENTIONS = (PARENCHYMA, INTRACRANIAL)

# The intracranial one is worker.export.outputs.FETAL_BRAIN's own description.
_DESCRIPTIONS = {
    PARENCHYMA: "Parenchyma: brain tissue, ventricles; no extra-axial CSF",
    UNSTATED: "Brain; extra-axial CSF in or out: not stated by the model",
}


#: The brain volume's measurement label: stored with the result, so a page drawn later (a
#: GA entered after the worker ran, the growth chart) knows whether the volume may be ranked
#: in the intracranial reference.
VOLUME_LABELS = {
    INTRACRANIAL: "Brain volume (intracranial)",
    PARENCHYMA: "Brain volume (parenchyma)",
    UNSTATED: "Brain volume",
}


def ranked(volume_label: str) -> bool:
    """Whether a stored brain volume, by its label, is the intracranial volume (Ren 2022's)."""
    return volume_label == VOLUME_LABELS[INTRACRANIAL]


class ConventionError(ValueError):
    """A checkpoint states a convention this service does not know."""


def of_checkpoint(metadata: Mapping[str, Any]) -> str:
    """The convention a checkpoint's metadata states (``unstated`` when it says nothing)."""
    value = metadata.get("mask_convention")
    if value is None:
        return UNSTATED
    if value not in CONVENTIONS:
        raise ConventionError(f"mask_convention {value!r} is not one of {', '.join(CONVENTIONS)}")
    return str(value)


def segment_kind(convention: str) -> SegmentKind:
    """The SEG's fetal brain segment, its Segment Description saying what the mask holds."""
    from worker.export.outputs import FETAL_BRAIN

    if convention == INTRACRANIAL:
        return FETAL_BRAIN
    return replace(FETAL_BRAIN, description=_DESCRIPTIONS[convention])
