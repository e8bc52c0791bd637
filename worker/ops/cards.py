"""Model cards for people: as JSON (``medseg models --json``) and as the Markdown page
``docs/model-cards.md`` (``medseg models --cards-markdown``; a test keeps the page current)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from worker.core.card import ModelCard, not_for_clinical_use
from worker.core.registry import ModelSpec, off_reason


def card_json(card: ModelCard | None) -> dict[str, Any] | None:
    """The card as plain JSON values (tuples as lists, mappings as dicts)."""
    if card is None:
        return None
    plain: dict[str, Any] = dataclasses.asdict(card)
    plain["not_for_clinical_use"] = not_for_clinical_use(card.validation)
    return _lists(plain)  # type: ignore[no-any-return]


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _lists(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_lists(v) for v in value]
    return value


def spec_json(spec: ModelSpec) -> dict[str, Any]:
    return {
        "name": spec.name,
        "version": spec.version,
        "queue": spec.queue,
        "description": spec.description,
        # Its jobs may run several to a forward pass (worker.runtime.batch_jobs).
        "batch_series": spec.batch_series,
        # Never validated on real patient data: off unless MEDSEG_RESEARCH_MODELS names it.
        "research_only": spec.research_only,
        "enabled": off_reason(spec) is None,
        "card": card_json(spec.card),
    }


def _metric(value: float | int | str) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _card_markdown(spec: ModelSpec) -> list[str]:
    lines = [f"## {spec.name} {spec.version}", ""]
    card = spec.card
    if card is None:
        return [*lines, "No card: results are **unvalidated** (not for clinical use).", ""]
    status = f"**{card.validation}**"
    if not_for_clinical_use(card.validation):
        status += " — not for clinical use"
    if spec.research_only:
        status += "; **off by default** (`MEDSEG_RESEARCH_MODELS` turns it on)"
    weights = ", ".join(f"`{w}`" for w in card.weights_sha256) or "none (a classical method)"
    lines += [
        "| | |",
        "| --- | --- |",
        f"| validation | {status} |",
        f"| intended input | {card.intended_input} |",
        f"| intended use | {card.intended_use} |",
        f"| weights (sha256) | {weights} |",
        "",
        "Training data:",
        "",
    ]
    for source in card.training_data:
        extra = "".join(
            f" {label}: {text}."
            for label, text in (("Licence", source.licence), ("Cite", source.citation))
            if text
        )
        lines.append(f"- {source.name} ({source.kind}): {source.description}.{extra}")
    if not card.training_data:
        lines.append("- none: a classical method, nothing is trained")
    lines += ["", "Evaluations:", ""]
    for evaluation in card.evaluations:
        metrics = ", ".join(f"{k} {_metric(v)}" for k, v in evaluation.metrics.items())
        lines.append(f"- {evaluation.data}; labels: {evaluation.labels}; {metrics or '-'}")
    lines += ["", "Known failure modes:", ""]
    lines += [f"- {mode}" for mode in card.failure_modes]
    if card.components:
        lines += ["", "Components with a status of their own (their outputs carry it):", ""]
        for component in card.components:
            own = ", ".join(f"`{w}`" for w in component.weights_sha256) or "-"
            lines.append(
                f"- {component.name}: **{component.validation}**; {component.summary} "
                f"(weights {own})"
            )
    return [*lines, ""]


def cards_markdown(specs: Sequence[ModelSpec]) -> str:
    lines = [
        "# Model cards",
        "",
        "Generated from `worker/models/<name>/card.py` by `medseg models --cards-markdown`; "
        "do not edit by hand (a test compares this page with the cards).",
        "",
        "Every result carries its model's **validation status** for the weights that made it "
        "(report.json, the SR's algorithm identification, the SEG/SR series description, the "
        "database, `medseg show`, the dashboard): `validated-real` (real held-out data, "
        "expert labels), `reference-only` (real data against a reference method, no expert "
        "labels), `validated-synthetic` (trained and validated on images synthesised from "
        "real anatomy, checked on a few real images, not validated on patients), "
        "`phantom-only` (never evaluated on a real patient image) and `unvalidated` "
        "(weights no card describes, e.g. your own checkpoint). The last three are **not for "
        "clinical use** and are withheld from destinations unless they set "
        "`send_not_validated` (docs/configuration.md).",
        "",
    ]
    for spec in specs:
        lines += _card_markdown(spec)
    return "\n".join(lines).rstrip("\n") + "\n"
