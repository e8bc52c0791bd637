"""The cards rendered: docs/model-cards.md is exactly what the cards make (so it cannot go
stale), and ``medseg models --json`` carries every card as plain JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from worker.cli import main
from worker.core.registry import all_specs
from worker.ops.cards import cards_markdown

DOC = Path(__file__).resolve().parents[4] / "docs" / "model-cards.md"


def test_the_committed_model_cards_page_is_the_rendered_cards() -> None:
    assert DOC.read_text() == cards_markdown(all_specs()), (
        "docs/model-cards.md is stale: run `medseg models --cards-markdown > docs/model-cards.md`"
    )


def test_models_json_includes_each_card(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert set(rows) == {spec.name for spec in all_specs()}
    head = rows["fetal-head-unet"]["card"]
    assert head["validation"] == "validated-real" and head["not_for_clinical_use"] is False
    assert head["evaluations"][0]["metrics"]["hc_abs_diff_mm_mean"] == 2.025
    cxr = rows["lung-cxr"]["card"]
    assert cxr["validation"] == "validated-real" and cxr["not_for_clinical_use"] is False
    assert cxr["components"][0]["name"] == "pneumonia-detector"
    assert cxr["components"][0]["validation"] == "phantom-only"
    assert rows["lung-ct-threshold"]["card"]["weights_sha256"] == []


def test_models_text_shows_the_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "phantom-only" in lines["fetal-brain-unet"]
    assert "reference-only" in lines["lung-ct-unet"]


def test_models_text_says_how_workers_batch_single_frame_jobs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from worker.core.settings import get_settings

    monkeypatch.setenv("MEDSEG_BATCH_MAX", "4")
    get_settings.cache_clear()
    try:
        assert main(["models"]) == 0
    finally:
        get_settings.cache_clear()
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("batching")]
    assert "up to 4 jobs per forward pass" in line and "waiting up to 10 ms" in line
    assert line.endswith("models: fetal-head-unet, lung-cxr")
