"""Studies for the study browser's tests: rows as the gateway and the worker leave them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session, sessionmaker

from db.models import Delivery, Job, JobState, Result, Series, SeriesStatus, Study


def add_study(
    session_factory: sessionmaker[Session],
    uid: str,
    *,
    patient_id: str | None = None,
    accession: str | None = None,
    study_date: str | None = None,
    received: datetime | None = None,
    series: list[dict[str, object]] | None = None,
) -> int:
    """One study; each ``series`` item: modality, calling_ae, body_part_examined,
    series_description, status
    (SeriesStatus), jobs (list of (model, JobState)), delivery (DeliveryState of the first
    job's result), error (of its jobs)."""
    with session_factory.begin() as session:
        study = Study(
            study_instance_uid=uid,
            patient_id=patient_id,
            accession_number=accession,
            study_date=study_date,
        )
        if received is not None:
            study.created_at = received
        session.add(study)
        for n, spec in enumerate(series or [], start=1):
            row = Series(
                study=study,
                series_instance_uid=f"{uid}.{n}",
                modality=str(spec.get("modality", "CT")),
                calling_ae=str(spec.get("calling_ae", "MODALITY")),
                body_part_examined=str(spec.get("body_part_examined", "")),
                series_description=str(spec.get("series_description", "")),
                sop_class_uid=str(spec.get("sop_class_uid", "1.2.840.10008.5.1.4.1.1.2")),
                status=spec.get("status", SeriesStatus.COMPLETE),
            )
            session.add(row)
            jobs: list[tuple[str, JobState]] = spec.get("jobs", [])  # type: ignore[assignment]
            for model, state in jobs:
                job = Job(
                    series=row,
                    model_name=model,
                    model_version="1",
                    queue="cpu",
                    state=state,
                    error=spec.get("error"),
                )
                session.add(job)
                if "delivery" in spec:
                    result = Result(job=job, model_name=model, model_version="1")
                    session.add(result)
                    session.add(
                        Delivery(
                            result=result,
                            destination="pacs",
                            state=spec["delivery"],
                        )
                    )
        session.flush()
        return study.id
