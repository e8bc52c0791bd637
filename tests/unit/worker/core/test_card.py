"""Validation statuses: which checkpoint a card vouches for, and what "not for clinical use"
covers."""

from __future__ import annotations

from worker.core.card import (
    CardEvaluation,
    ComponentCard,
    DataSource,
    ModelCard,
    describe_validation,
    not_for_clinical_use,
)
from worker.core.registry import ModelSpec


def _card(weights: tuple[str, ...]) -> ModelCard:
    return ModelCard(
        validation="reference-only",
        intended_input="x",
        intended_use="y",
        weights_sha256=weights,
        training_data=(DataSource("d", "real", "desc"),),
        evaluations=(CardEvaluation("e", "expert", {"dice": 0.9}),),
        failure_modes=("f",),
        components=(ComponentCard("part", "phantom-only", "s", weights_sha256=("b" * 64,)),),
    )


def test_a_card_vouches_for_its_weights_only() -> None:
    card = _card(("a" * 64,))
    assert card.status_for("a" * 64) == "reference-only"
    assert card.status_for("c" * 64) == "unvalidated"
    assert card.status_for(None) == "unvalidated"


def test_a_card_without_weights_covers_every_run_of_its_method() -> None:
    card = _card(())
    assert card.status_for(None) == "reference-only"
    assert card.status_for("c" * 64) == "reference-only"


def test_components_have_their_own_status() -> None:
    card = _card(("a" * 64,))
    assert card.component_status("part", "b" * 64) == "phantom-only"
    assert card.component_status("part", "a" * 64) == "unvalidated"
    assert card.component_status("other", None) == "unvalidated"


def test_a_spec_without_a_card_makes_unvalidated_results() -> None:
    spec = ModelSpec("m", "1", "cpu", "d", accepts=lambda t: False, load=lambda d: None)  # type: ignore[arg-type,return-value]
    assert spec.validation_for("a" * 64) == "unvalidated"


def test_not_for_clinical_use_covers_phantom_only_unvalidated_and_unknown() -> None:
    assert [not_for_clinical_use(s) for s in ("validated-real", "reference-only")] == [False] * 2
    assert all(not_for_clinical_use(s) for s in ("phantom-only", "unvalidated", None))
    assert describe_validation("phantom-only") == "phantom-only (NOT FOR CLINICAL USE)"
    assert describe_validation("validated-real") == "validated-real"
