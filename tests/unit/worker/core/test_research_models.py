"""A model no real patient data validated is off by default (registry.off_reason): routing
passes it over and says why, a job pinned to it is skipped, an operator cannot send a series
to it by hand, and ``MEDSEG_RESEARCH_MODELS`` turns it on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker

from db.models import Series, SeriesStatus, Study
from worker.core.errors import NoModelError
from worker.core.registry import all_specs, get_spec, off_reason
from worker.core.routing import route, unrouted_reason
from worker.core.settings import get_settings
from worker.core.tags import SeriesTags

FETAL_MR = SeriesTags.of("MR", series_description="Fetal brain HASTE COR")


@pytest.fixture
def defaults(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The shipped default: no research model named (tests/conftest.py names one)."""
    monkeypatch.delenv("MEDSEG_RESEARCH_MODELS", raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_only_models_never_validated_on_patients_are_research_only() -> None:
    research = {spec.name for spec in all_specs() if spec.research_only}
    assert research == {"fetal-brain-unet"}  # phantom-only; the others are validated on real data
    for spec in all_specs():
        assert spec.card is not None
        assert spec.research_only == (
            spec.card.validation in {"phantom-only", "validated-synthetic", "unvalidated"}
        )


@pytest.mark.usefixtures("defaults")
def test_by_default_a_fetal_mr_is_not_routed_and_the_reason_says_how_to_turn_it_on() -> None:
    assert get_spec("fetal-brain-unet").accepts(FETAL_MR)
    assert route(FETAL_MR) is None
    reason = unrouted_reason(FETAL_MR)
    assert "fetal-brain-unet 1.0.0 is off" in reason
    assert "phantom-only" in reason and "MEDSEG_RESEARCH_MODELS" in reason
    # Other series are routed as before, and their reasons are unchanged.
    chest = route(SeriesTags.of("CT", body_part_examined="CHEST"))
    assert chest is not None and chest.name == "lung-ct-unet"
    assert unrouted_reason(SeriesTags.of("MR", body_part_examined="KNEE")).startswith(
        "no model accepts modality MR"
    )


def test_named_in_the_setting_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSEG_RESEARCH_MODELS", json.dumps(["fetal-brain-unet"]))
    get_settings.cache_clear()
    try:
        spec = route(FETAL_MR)
        assert spec is not None and spec.name == "fetal-brain-unet"
        assert off_reason(spec) is None
    finally:
        get_settings.cache_clear()


@pytest.mark.usefixtures("defaults")
def test_a_job_pinned_to_an_off_model_is_skipped_before_its_files_are_read(
    tmp_path: Path,
) -> None:
    from worker.pipeline.run import read_and_route

    missing = [tmp_path / "never-read.dcm"]
    with pytest.raises(NoModelError, match=r"fetal-brain-unet 1\.0\.0 is off"):
        read_and_route(missing, get_spec("fetal-brain-unet"))


@pytest.mark.usefixtures("defaults")
def test_an_operator_cannot_send_a_series_to_an_off_model(
    session_factory: sessionmaker[Session],
) -> None:
    from worker.ops.manual_route import route_by_hand
    from worker.ops.operations import OperationError

    with session_factory.begin() as session:
        study = Study(study_instance_uid="1.2.3", patient_id="P1")
        series = Series(
            series_instance_uid="1.2.3.4",
            study=study,
            modality="MR",
            series_description="Fetal brain HASTE COR",
            status=SeriesStatus.UNROUTED,
        )
        session.add(series)
    with pytest.raises(OperationError, match="MEDSEG_RESEARCH_MODELS"):
        route_by_hand(session_factory, "1.2.3.4", "fetal-brain-unet")


@pytest.mark.usefixtures("defaults")
def test_the_model_list_says_it_is_off(capsys: pytest.CaptureFixture[str]) -> None:
    from worker.cli.main import main

    assert main(["models"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line}
    assert "OFF: research only" in lines["fetal-brain-unet"]
    assert "OFF" not in lines["fetal-head-unet"]
    assert main(["models", "--json"]) == 0
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert listed["fetal-brain-unet"]["research_only"] is True
    assert listed["fetal-brain-unet"]["enabled"] is False
    assert listed["lung-cxr"]["enabled"] is True


@pytest.mark.usefixtures("defaults")
def test_an_off_model_is_not_run_again_over_its_old_series(
    session_factory: sessionmaker[Session],
) -> None:
    from worker.ops.operations import OperationError
    from worker.ops.reruns import rerun, rerun_plan

    for attempt in (rerun, rerun_plan):
        with pytest.raises(OperationError, match="MEDSEG_RESEARCH_MODELS"):
            attempt(session_factory, "fetal-brain-unet")
    assert rerun_plan(session_factory, "fetal-head-unet") == []  # the others as before
