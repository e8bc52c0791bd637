"""The study browser's queries: studies filtered by patient ID, accession number, study date,
modality, calling AE, job state (or delivery_failed, unrouted) and model; sorted and paged.

Every filter is an equality or a range on an indexed column (``db.models``, migration 0009),
those on series and jobs as ``IN (subquery)``, so a search stays an index lookup however many
studies there are (benchmarks/study_search.py, docs/performance.md). The dashboard's
/studies and ``medseg studies`` call ``search``."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session, selectinload, sessionmaker

from db.models import Job, JobState, Result, Series, SeriesStatus, Study

logger = logging.getLogger(__name__)

DELIVERY_FAILED = "delivery_failed"
UNROUTED = "unrouted"
#: What the state filter takes: a job state, a job with a delivery failed for good, or a
#: series no model accepts.
STATES = [s.value for s in JobState] + [DELIVERY_FAILED, UNROUTED]
SortKey = Literal["received", "study_date", "patient_id"]
SORTS: tuple[SortKey, ...] = ("received", "study_date", "patient_id")
MAX_PER_PAGE = 200
#: Pages past this are refused (an offset past the database's integers was a 500).
MAX_PAGE = 100_000


class SearchError(ValueError):
    """A filter that cannot be applied; the message says which and why."""


@dataclass(frozen=True)
class StudyFilter:
    """Empty fields do not filter. Dates bound the Study Date (DICOM DA), both inclusive."""

    patient_id: str = ""
    accession: str = ""
    since: date | None = None
    until: date | None = None
    modality: str = ""
    calling_ae: str = ""
    state: str = ""
    model: str = ""

    def __post_init__(self) -> None:
        if self.state and self.state not in STATES:
            raise SearchError(f"unknown state {self.state!r} (one of {', '.join(STATES)})")
        if self.since and self.until and self.since > self.until:
            raise SearchError(f"the date range ends ({self.until}) before it starts ({self.since})")

    def conditions(self) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if self.patient_id.strip():
            # A prefix, any case: "ab12" finds AB123 and ab1299 (LIKE's wildcards escaped).
            where.append(
                func.lower(Study.patient_id).like(
                    _escape_like(self.patient_id.strip().lower()) + "%", escape="\\"
                )
            )
        if self.accession.strip():
            where.append(Study.accession_number == self.accession.strip())
        if self.since:
            where.append(Study.study_date >= self.since.strftime("%Y%m%d"))
        if self.until:
            where.append(Study.study_date <= self.until.strftime("%Y%m%d"))
        series: list[ColumnElement[bool]] = []
        if self.modality.strip():
            series.append(Series.modality == self.modality.strip().upper())
        if self.calling_ae.strip():
            series.append(Series.calling_ae == self.calling_ae.strip())
        if self.state == UNROUTED:
            series.append(Series.status == SeriesStatus.UNROUTED)
        # Uncorrelated IN (subquery): computed once, not once per study (a correlated EXISTS
        # on a job state took SQLite a minute over 20 000 studies).
        if series:
            where.append(Study.id.in_(select(Series.study_id).where(*series)))
        jobs = self._job_conditions()
        if jobs:
            matching = select(Series.study_id).join(Job, Job.series_id == Series.id)
            where.append(Study.id.in_(matching.where(*jobs)))
        return where

    def _job_conditions(self) -> list[ColumnElement[bool]]:
        jobs: list[ColumnElement[bool]] = []
        if self.model.strip():
            jobs.append(Job.model_name == self.model.strip())
        if self.state == DELIVERY_FAILED:
            from worker.ops.deliveries import delivery_failed

            jobs.append(delivery_failed())
        elif self.state and self.state != UNROUTED:
            jobs.append(Job.state == JobState(self.state))
        return jobs


@dataclass(frozen=True)
class SeriesRow:
    id: int
    modality: str
    description: str
    calling_ae: str
    status: str
    #: Why nothing was made of it: the routing reason of an unrouted series, the error of
    #: its skipped jobs; None when it was processed.
    not_processed: str | None


@dataclass(frozen=True)
class StudyRow:
    id: int
    study_instance_uid: str
    patient_id: str | None
    accession_number: str | None
    study_date: str | None
    received_at: str  # UTC, to the second
    series: list[SeriesRow]
    jobs_by_state: dict[str, int]
    models: list[str]
    delivery_failed: bool

    @property
    def modalities(self) -> list[str]:
        return sorted({s.modality for s in self.series if s.modality})

    @property
    def calling_aes(self) -> list[str]:
        return sorted({s.calling_ae for s in self.series if s.calling_ae})


@dataclass(frozen=True)
class StudyPage:
    rows: list[StudyRow]
    total: int
    page: int
    per_page: int
    sort: SortKey = "received"
    descending: bool = True
    filters: StudyFilter = field(default_factory=StudyFilter)

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


def _escape_like(text: str) -> str:
    """``text`` matched literally by LIKE (escape character ``\\``)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _ordered(query: Select[Any], sort: SortKey, descending: bool) -> Select[Any]:
    column = {
        "received": Study.created_at,
        "study_date": Study.study_date,
        "patient_id": Study.patient_id,
    }[sort]
    order = column.desc() if descending else column.asc()
    tie = Study.id.desc() if descending else Study.id.asc()
    # Studies without the value last either way (NULLS LAST is not SQLite's default).
    return query.order_by(column.is_(None), order, tie)


def search(
    session_factory: sessionmaker[Session],
    filters: StudyFilter,
    *,
    sort: SortKey = "received",
    descending: bool = True,
    page: int = 1,
    per_page: int = 50,
) -> StudyPage:
    """One page of the studies that match ``filters`` (page 1 first) and how many match."""
    if sort not in SORTS:
        raise SearchError(f"unknown sort {sort!r} (one of {', '.join(SORTS)})")
    per_page = min(max(per_page, 1), MAX_PER_PAGE)
    if page > MAX_PAGE:
        raise SearchError(f"page: pages run from 1 to {MAX_PAGE}")
    page = max(page, 1)
    where = filters.conditions()
    with session_factory() as session:
        total = int(session.scalar(select(func.count(Study.id)).where(*where)) or 0)
        ids_query = _ordered(select(Study.id).where(*where), sort, descending)
        ids: list[int] = list(
            session.scalars(ids_query.offset((page - 1) * per_page).limit(per_page))
        )
        studies = {
            s.id: s
            for s in session.scalars(
                select(Study)
                .where(Study.id.in_(ids))
                .options(
                    selectinload(Study.series)
                    .selectinload(Series.jobs)
                    .selectinload(Job.results)
                    .selectinload(Result.deliveries)
                )
            )
        }
        rows = [_row(studies[i]) for i in ids]
    return StudyPage(rows, total, page, per_page, sort, descending, filters)


def not_processed_reason(series: Series) -> str | None:
    """Why ``series`` (its jobs loaded) yielded nothing: the routing reason when no model
    accepts it, its skipped jobs' errors; None otherwise."""
    if series.status is SeriesStatus.UNROUTED:
        from worker.core.routing import unrouted_reason
        from worker.core.tags import SeriesTags

        tags = SeriesTags.of_row(series)
        return unrouted_reason(tags)
    skipped = [j.error or "skipped" for j in series.jobs if j.state is JobState.SKIPPED]
    return "; ".join(dict.fromkeys(skipped)) or None


def _row(study: Study) -> StudyRow:
    from worker.ops.deliveries import has_failed_delivery

    jobs = [job for series in study.series for job in series.jobs]
    return StudyRow(
        id=study.id,
        study_instance_uid=study.study_instance_uid,
        patient_id=study.patient_id,
        accession_number=study.accession_number,
        study_date=study.study_date,
        received_at=study.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        series=[
            SeriesRow(
                s.id,
                s.modality,
                s.series_description,
                s.calling_ae,
                s.status.value,
                not_processed_reason(s),
            )
            for s in sorted(study.series, key=lambda s: s.id)
        ],
        jobs_by_state=dict(Counter(j.state.value for j in jobs).most_common()),
        models=sorted({j.model_name for j in jobs}),
        delivery_failed=any(has_failed_delivery(j) for j in jobs),
    )


def study_date_text(value: str | None) -> str:
    """DICOM DA ``20261130`` as ``2026-11-30``; anything else as given, ``-`` when empty."""
    if value and len(value) == 8 and value.isdigit():
        return f"{value[:4]}-{value[4:6]}-{value[6:]}"
    return value or "-"
