"""Flagged results counted by model and a bounded reason code."""

from __future__ import annotations

from prometheus_client import REGISTRY
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, JobState, Result, Series, Study
from worker.runtime.metrics import reason_code, reason_codes, record_job


def test_reason_codes_drop_the_numbers() -> None:
    assert (
        reason_code("mask is not elliptical (fit IoU 0.912 < 0.9626)") == "mask_is_not_elliptical"
    )
    assert reason_code("HC outside the plausible range (31 mm, not 40-400 mm)") == (
        "hc_outside_the_plausible_range"
    )
    assert reason_code("test gate: lungs implausible") == "test_gate"
    assert reason_code("(12)") == "other"
    assert len(reason_code("x" * 200)) == 40
    assert reason_codes("a (1)\na (2)\n\nb: 3") == ["a", "b"]
    assert reason_codes(None) == []


def test_a_needs_review_job_counts_each_reason(session_factory: sessionmaker[Session]) -> None:
    with session_factory.begin() as session:
        series = Series(study=Study(study_instance_uid="1.5"), series_instance_uid="1.5.1")
        job = Job(
            series=series,
            model_name="fetal-head-unet",
            model_version="2",
            queue="gpu",
            state=JobState.NEEDS_REVIEW,
            attempts=2,
        )
        job.results.append(
            Result(
                model_name="fetal-head-unet",
                model_version="2",
                review="mask is not elliptical (0.9 < 0.96)\nlow confidence inside the head (0.8)",
            )
        )
        session.add(job)
        session.flush()
        job_id = job.id
    labels = {"model": "fetal-head-unet", "reason": "mask_is_not_elliptical"}
    other = {"model": "fetal-head-unet", "reason": "low_confidence_inside_the_head"}
    before = [
        REGISTRY.get_sample_value("medseg_results_flagged_total", x) or 0.0 for x in (labels, other)
    ]
    record_job(session_factory, job_id)
    after = [REGISTRY.get_sample_value("medseg_results_flagged_total", x) for x in (labels, other)]
    assert after == [before[0] + 1, before[1] + 1]


def test_a_delivery_failed_for_good_is_counted_by_destination(
    session_factory: sessionmaker[Session],
) -> None:
    from db.models import Delivery, DeliveryState
    from worker.runtime.metrics import record_delivery

    with session_factory.begin() as session:
        series = Series(study=Study(study_instance_uid="1.6"), series_instance_uid="1.6.1")
        job = Job(series=series, model_name="m", model_version="1", queue="cpu")
        delivery = Delivery(destination="pacs-x", state=DeliveryState.FAILED, attempts=5)
        pending = Delivery(destination="pacs-x", state=DeliveryState.PENDING, attempts=1)
        job.results.append(
            Result(model_name="m", model_version="1", deliveries=[delivery, pending])
        )
        session.add(job)
        session.flush()
        failed_id, pending_id = delivery.id, pending.id
    labels = {"destination": "pacs-x"}
    before = REGISTRY.get_sample_value("medseg_deliveries_failed_total", labels) or 0.0
    record_delivery(session_factory, pending_id)  # will be retried: not failed for good
    record_delivery(session_factory, failed_id)
    assert REGISTRY.get_sample_value("medseg_deliveries_failed_total", labels) == before + 1
