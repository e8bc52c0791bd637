"""What a result says about itself where viewers show it: the series descriptions of its SEG
and SR carry " NOT FOR CLINICAL USE" (phantom-only and unvalidated results) and
" NEEDS REVIEW" (flagged by the model's quality gate)."""

from __future__ import annotations

from worker.core.card import not_for_clinical_use
from worker.export.outputs import ModelOutput

NOT_FOR_CLINICAL_USE = " NOT FOR CLINICAL USE"
REVIEW_SUFFIX = " NEEDS REVIEW"
LO_MAX = 64  # Series Description is LO: 64 characters at most


def flags(output: ModelOutput) -> str:
    """The suffixes that apply to ``output``, in a fixed order."""
    return NOT_FOR_CLINICAL_USE * not_for_clinical_use(output.validation) + REVIEW_SUFFIX * bool(
        output.review
    )


def series_description(base: str, output: ModelOutput) -> str:
    """``base`` with the output's flags, within 64 characters: the base is shortened, never
    the flags."""
    suffix = flags(output)
    return base[: LO_MAX - len(suffix)] + suffix
