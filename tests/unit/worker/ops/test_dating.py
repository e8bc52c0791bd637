"""Issue 31 item 3: a GA by dates a reviewer enters for a study (LMP or GA on the study date):
its parsing, the rule (entered wins over the DICOM LMP), storage and the audit trail."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import AuditEvent, Study
from worker.ops.audit import Actor
from worker.ops.dating import (
    DatingError,
    effective,
    entered,
    lmp_days,
    parse_ga,
    parse_lmp,
    set_dating,
)
from worker.ops.operations import OperationError

RITA = Actor("rita", "cli")


def test_a_ga_is_weeks_and_days() -> None:
    assert parse_ga("24w3d") == 171
    assert parse_ga(" 24W ") == 168
    assert parse_ga("0w6d") == 6
    assert parse_ga("45w0d") == 315
    for bad in ("24w7d", "46w", "24", "24.5w", "w3d", "", "24w3d1"):
        with pytest.raises(DatingError):
            parse_ga(bad)


def test_an_lmp_is_an_iso_or_dicom_date() -> None:
    assert parse_lmp("2026-05-01") == "20260501"
    assert parse_lmp("20260501") == "20260501"
    for bad in ("2026-02-30", "01/05/2026", "yesterday", ""):
        with pytest.raises(DatingError):
            parse_lmp(bad)


def test_an_lmp_needs_the_study_date_and_a_pregnancys_span() -> None:
    assert lmp_days("20251127", "20260611") == 196  # 28w0d
    with pytest.raises(DatingError, match="no study date"):
        lmp_days("20251127", None)
    with pytest.raises(DatingError, match="not 0-45 weeks"):
        lmp_days("20260612", "20260611")  # after the study
    with pytest.raises(DatingError, match="not 0-45 weeks"):
        lmp_days("20240101", "20260611")


def test_the_entered_ga_wins_over_the_dicom_lmp() -> None:
    study = Study(study_instance_uid="1.2.3", study_date="20260611")
    assert effective(study, None) is None
    dicom = effective(study, 200.0)
    assert dicom is not None and dicom.source == "dicom" and dicom.days == 200.0
    assert dicom.describe() == "from the DICOM LMP"
    study.ga_days, study.ga_by = 171, "rita"
    chosen = effective(study, 200.0)
    assert chosen is not None and chosen.source == "entered" and chosen.days == 171.0
    assert chosen.describe().startswith("entered by rita") and "GA on the study date" in (
        chosen.describe()
    )
    study.ga_days, study.ga_lmp = None, "20251127"
    by_lmp = effective(study, None)
    assert by_lmp is not None and by_lmp.days == 196.0 and "LMP 2025-11-27" in by_lmp.describe()
    study.study_date = None  # an LMP without a study date gives no GA: the DICOM one stands
    assert entered(study) is None
    assert effective(study, 200.0) == dicom


def _study(factory: sessionmaker[Session], date: str | None = "20260611") -> int:
    with factory.begin() as session:
        study = Study(study_instance_uid=f"1.2.9.{date}", study_date=date)
        session.add(study)
        session.flush()
        return study.id


def _trail(factory: sessionmaker[Session]) -> list[tuple[str, str, int | None, str]]:
    with factory() as session:
        rows = session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(e.actor, e.outcome, e.study_id, e.detail or "") for e in rows]


def test_set_and_clear_are_stored_and_audited(session_factory: sessionmaker[Session]) -> None:
    study_id = _study(session_factory)
    found = set_dating(session_factory, study_id, ga_days=171, actor=RITA)
    assert found is not None and found.days == 171.0 and found.by == "rita"
    found = set_dating(session_factory, study_id, lmp="20251127", actor=RITA)
    assert found is not None and found.days == 196.0
    with session_factory() as session:
        study = session.get_one(Study, study_id)
        assert (study.ga_lmp, study.ga_days, study.ga_by) == ("20251127", None, "rita")
        assert study.ga_at is not None
    assert set_dating(session_factory, study_id, actor=RITA) is None
    with session_factory() as session:
        study = session.get_one(Study, study_id)
        assert (study.ga_lmp, study.ga_days, study.ga_by, study.ga_at) == (None,) * 4
    trail = _trail(session_factory)
    assert [(a, o, s) for a, o, s, _ in trail] == [("rita", "done", study_id)] * 3
    assert "24w3d" in trail[0][3] and "28w0d" in trail[1][3] and "cleared" in trail[2][3]


def test_an_lmp_on_a_study_without_a_date_is_refused(
    session_factory: sessionmaker[Session],
) -> None:
    study_id = _study(session_factory, None)
    with pytest.raises(OperationError, match="no study date"):
        set_dating(session_factory, study_id, lmp="20251127", actor=RITA)
    with pytest.raises(OperationError, match="no study 424242"):
        set_dating(session_factory, 424242, ga_days=100, actor=RITA)
    assert [o for _, o, _, _ in _trail(session_factory)] == ["refused", "refused"]
    with pytest.raises(DatingError, match="not both"):
        set_dating(session_factory, study_id, lmp="20251127", ga_days=1, actor=RITA)
