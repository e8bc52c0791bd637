"""Model cards: what a model is for, what it was trained and evaluated on, how it fails, and
how far its results may be trusted (its validation status).

One card per model, declared in the model's package (``worker/models/<name>/card.py``) and
named by its ``SPEC``; rendered into ``docs/model-cards.md`` and ``medseg models --json``.
The status applies to the weights the card describes (``weights_sha256``); a result made with
any other checkpoint (a user's own) is ``unvalidated``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

ValidationStatus = Literal[
    "validated-real", "reference-only", "validated-synthetic", "phantom-only", "unvalidated"
]

#: Most trusted first. ``validated-real``: evaluated on real held-out data against expert
#: labels; ``reference-only``: real data, but no expert labels (compared with a reference
#: method); ``validated-synthetic``: trained and validated on images synthesised from real
#: anatomy (label maps of real patients), with at most a few real images for a check, not a
#: validation on patients; ``phantom-only``: never evaluated on a real patient image;
#: ``unvalidated``: weights no card describes.
STATUSES: tuple[ValidationStatus, ...] = (
    "validated-real",
    "reference-only",
    "validated-synthetic",
    "phantom-only",
    "unvalidated",
)

#: Statuses whose results must say "not for clinical use" wherever they appear.
NOT_FOR_CLINICAL_USE: frozenset[str] = frozenset(
    {"validated-synthetic", "phantom-only", "unvalidated"}
)


def not_for_clinical_use(status: str | None) -> bool:
    """True for validated-synthetic, phantom-only and unvalidated results (and results older
    than cards: None)."""
    return status is None or status in NOT_FOR_CLINICAL_USE


def least_trusted(status: ValidationStatus, *others: ValidationStatus) -> ValidationStatus:
    """The least trusted of ``status`` and ``others`` (``STATUSES`` order): a result made by
    a model and components of their own (the pneumonia detector) is as trusted as its least
    trusted part."""
    return max((status, *others), key=STATUSES.index)


def describe_validation(status: str | None) -> str:
    """The status as operators read it: ``phantom-only (NOT FOR CLINICAL USE)``."""
    shown = status or "unknown (a result older than model cards)"
    return f"{shown} (NOT FOR CLINICAL USE)" if not_for_clinical_use(status) else shown


@dataclass(frozen=True)
class DataSource:
    name: str
    kind: Literal["real", "phantom"]
    description: str
    licence: str = ""
    citation: str = ""


@dataclass(frozen=True)
class CardEvaluation:
    """One evaluation: on what, split how, against which labels, with which numbers."""

    data: str
    labels: str  # "expert" / "reference method ..." / "phantom ground truth"
    metrics: Mapping[str, float | int | str] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class ComponentCard:
    """A network inside a model with a status of its own (the pneumonia detector inside
    lung-cxr); its outputs carry that status."""

    name: str
    validation: ValidationStatus
    summary: str
    weights_sha256: tuple[str, ...] = ()  # its shipped weights; () = it has none of its own

    def status_for(self, weights_sha256: str | None) -> ValidationStatus:
        """As ``ModelCard.status_for``, for this component's own weights."""
        return _status(self.validation, self.weights_sha256, weights_sha256)


@dataclass(frozen=True)
class ModelCard:
    validation: ValidationStatus
    intended_input: str
    intended_use: str
    weights_sha256: tuple[str, ...]  # the shipped weights this card describes
    training_data: tuple[DataSource, ...]
    evaluations: tuple[CardEvaluation, ...]
    failure_modes: tuple[str, ...]
    components: tuple[ComponentCard, ...] = ()

    def status_for(self, weights_sha256: str | None) -> ValidationStatus:
        """The card's status for the shipped weights; ``unvalidated`` for any other. A card
        without weights (a classical method, ``weights_sha256=()``) applies to every run."""
        return _status(self.validation, self.weights_sha256, weights_sha256)

    def component_status(self, name: str, weights_sha256: str | None) -> ValidationStatus:
        """The status of component ``name`` run with ``weights_sha256``; ``unvalidated`` for
        a component the card does not describe."""
        for component in self.components:
            if component.name == name:
                return component.status_for(weights_sha256)
        return "unvalidated"


def _status(
    validation: ValidationStatus, described: tuple[str, ...], actual: str | None
) -> ValidationStatus:
    if not described:
        return validation  # nothing to match: the card covers the method itself
    if actual is not None and actual in described:
        return validation
    return "unvalidated"
