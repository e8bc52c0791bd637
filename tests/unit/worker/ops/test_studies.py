"""The study browser's query layer on SQLite and PostgreSQL: every filter, sorting, paging,
the reason a series was not processed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from db.models import DeliveryState, JobState, SeriesStatus, Study, utcnow
from db.session import make_engine, make_session_factory
from tests.support.studies import add_study
from worker.ops.studies import SearchError, StudyFilter, search, study_date_text

NOW = utcnow()
CT_BRAIN = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(params=["sqlite", "postgresql"])
def factory(
    request: pytest.FixtureRequest, session_factory: sessionmaker[Session]
) -> Iterator[sessionmaker[Session]]:
    if request.param == "sqlite":
        yield session_factory
        return
    from tests.conftest import _port_open, fresh_postgres_database
    from tests.support.tools import need

    need("PostgreSQL at 127.0.0.1:5432", _port_open("127.0.0.1", 5432))
    with fresh_postgres_database("medseg_studies") as url:
        engine = make_engine(url)
        yield make_session_factory(engine)
        engine.dispose()


@pytest.fixture
def ids(factory: sessionmaker[Session]) -> dict[str, int]:
    """Four studies: a chest CT (succeeded, delivery failed), an obstetric US awaiting
    review, an MR head no model accepts, a CT with a skipped job; received a day apart."""
    return {
        "ct": add_study(
            factory,
            "1.5.1",
            patient_id="P-100",
            accession="A100",
            study_date="20261101",
            received=NOW - timedelta(days=3),
            series=[
                {
                    "modality": "CT",
                    "calling_ae": "CT_SCANNER",
                    "jobs": [("lung-ct", JobState.SUCCEEDED)],
                    "delivery": DeliveryState.FAILED,
                }
            ],
        ),
        "us": add_study(
            factory,
            "1.5.2",
            patient_id="P-200",
            accession="A200",
            study_date="20261115",
            received=NOW - timedelta(days=2),
            series=[
                {
                    "modality": "US",
                    "calling_ae": "US_ROOM",
                    "jobs": [("fetal-head", JobState.NEEDS_REVIEW)],
                }
            ],
        ),
        "mr": add_study(
            factory,
            "1.5.3",
            patient_id="P-100",
            accession="A300",
            study_date="20261120",
            received=NOW - timedelta(days=1),
            series=[
                {
                    "modality": "MR",
                    "calling_ae": "MR_ROOM",
                    "body_part_examined": "HEAD",
                    "sop_class_uid": "1.2.840.10008.5.1.4.1.1.4",
                    "status": SeriesStatus.UNROUTED,
                }
            ],
        ),
        "skipped": add_study(
            factory,
            "1.5.4",
            received=NOW,
            series=[
                {
                    "modality": "CT",
                    "calling_ae": "CT_SCANNER",
                    "sop_class_uid": CT_BRAIN,
                    "jobs": [("lung-ct", JobState.SKIPPED)],
                    "error": "one slice: lung-ct needs a volume",
                }
            ],
        ),
    }


def _found(factory: sessionmaker[Session], **filters: object) -> list[int]:
    return [row.id for row in search(factory, StudyFilter(**filters)).rows]  # type: ignore[arg-type]


def test_each_filter_finds_its_studies(factory: sessionmaker[Session], ids: dict[str, int]) -> None:
    assert _found(factory) == [ids["skipped"], ids["mr"], ids["us"], ids["ct"]]
    assert _found(factory, patient_id="P-100") == [ids["mr"], ids["ct"]]
    assert _found(factory, patient_id=" P-200 ") == [ids["us"]], "trimmed"
    # A prefix, any case (issue 32 item 10); LIKE's wildcards are taken literally.
    assert _found(factory, patient_id="p-10") == [ids["mr"], ids["ct"]]
    assert _found(factory, patient_id="p-") == [ids["mr"], ids["us"], ids["ct"]]
    assert _found(factory, patient_id="P-1000") == []
    assert _found(factory, patient_id="P_1") == [] and _found(factory, patient_id="%") == []
    assert _found(factory, accession="A300") == [ids["mr"]]
    assert _found(factory, since=date(2026, 11, 10)) == [ids["mr"], ids["us"]]
    assert _found(factory, until=date(2026, 11, 15)) == [ids["us"], ids["ct"]]
    assert _found(factory, since=date(2026, 11, 15), until=date(2026, 11, 15)) == [ids["us"]]
    assert _found(factory, modality="ct") == [ids["skipped"], ids["ct"]], "any case"
    assert _found(factory, calling_ae="US_ROOM") == [ids["us"]]
    assert _found(factory, model="fetal-head") == [ids["us"]]
    assert _found(factory, model="lung-ct", modality="CT", patient_id="P-100") == [ids["ct"]]


def test_state_filters_job_states_failed_deliveries_and_unrouted_series(
    factory: sessionmaker[Session], ids: dict[str, int]
) -> None:
    assert _found(factory, state="needs_review") == [ids["us"]]
    assert _found(factory, state="succeeded") == [ids["ct"]]
    assert _found(factory, state="skipped") == [ids["skipped"]]
    assert _found(factory, state="delivery_failed") == [ids["ct"]]
    assert _found(factory, state="unrouted") == [ids["mr"]]
    assert _found(factory, state="failed") == []
    with pytest.raises(SearchError, match="unknown state 'broken'"):
        StudyFilter(state="broken")
    with pytest.raises(SearchError, match="ends"):
        StudyFilter(since=date(2026, 11, 2), until=date(2026, 11, 1))


def test_rows_say_what_happened_and_why_a_series_was_not_processed(
    factory: sessionmaker[Session], ids: dict[str, int]
) -> None:
    rows = {row.id: row for row in search(factory, StudyFilter()).rows}
    ct, mr, skipped = rows[ids["ct"]], rows[ids["mr"]], rows[ids["skipped"]]
    assert (ct.patient_id, ct.accession_number, ct.study_date) == ("P-100", "A100", "20261101")
    assert ct.jobs_by_state == {"succeeded": 1} and ct.delivery_failed
    assert ct.modalities == ["CT"] and ct.calling_aes == ["CT_SCANNER"]
    assert ct.models == ["lung-ct"] and ct.series[0].not_processed is None
    assert mr.jobs_by_state == {} and not mr.delivery_failed
    reason = mr.series[0].not_processed
    assert reason is not None and reason.startswith("no model accepts modality MR, body part HEAD")
    assert "MR Image Storage" in reason
    assert skipped.series[0].not_processed == "one slice: lung-ct needs a volume"
    assert study_date_text("20261101") == "2026-11-01" and study_date_text(None) == "-"


def test_sorting_and_paging(factory: sessionmaker[Session], ids: dict[str, int]) -> None:
    def order(**kwargs: object) -> list[int]:
        return [r.id for r in search(factory, StudyFilter(), **kwargs).rows]  # type: ignore[arg-type]

    newest_first = [ids["skipped"], ids["mr"], ids["us"], ids["ct"]]
    assert order() == newest_first
    assert order(descending=False) == newest_first[::-1]
    # Studies without the value come last either way.
    assert order(sort="study_date") == [ids["mr"], ids["us"], ids["ct"], ids["skipped"]]
    assert order(sort="study_date", descending=False) == [
        ids["ct"],
        ids["us"],
        ids["mr"],
        ids["skipped"],
    ]
    by_patient = order(sort="patient_id", descending=False)
    assert by_patient[2:] == [ids["us"], ids["skipped"]]
    assert set(by_patient[:2]) == {ids["ct"], ids["mr"]}
    pages = [search(factory, StudyFilter(), per_page=3, page=n) for n in (1, 2, 3)]
    assert [p.total for p in pages] == [4, 4, 4] and pages[0].pages == 2
    assert [r.id for p in pages for r in p.rows] == newest_first, "page 3 is empty"
    with pytest.raises(SearchError, match="unknown sort"):
        search(factory, StudyFilter(), sort="name")  # type: ignore[arg-type]


def test_searches_use_the_indexes(factory: sessionmaker[Session], ids: dict[str, int]) -> None:
    """SQLite's plan for a search by patient ID and by accession number: an index lookup."""
    if factory.kw["bind"].dialect.name != "sqlite":
        pytest.skip("the plan is checked on SQLite")
    with factory() as session:
        for column, value in (("patient_id", "P-100"), ("accession_number", "A100")):
            query = select(Study.id).where(getattr(Study, column) == value)
            sql = str(query.compile(compile_kwargs={"literal_binds": True}))
            plan = " ".join(str(r[-1]) for r in session.execute(text("EXPLAIN QUERY PLAN " + sql)))
            assert f"USING COVERING INDEX ix_study_{column}" in plan or (
                f"USING INDEX ix_study_{column}" in plan
            ), plan
