"""A study's GA by dates entered by a reviewer: a last menstrual period (LMP) or the GA on the
study date (``24w3d``), stored on the study, audited as ``set_ga``, and which GA by dates the
growth standing uses.

The rule: **an entered GA by dates wins over the DICOM Last Menstrual Date.** It is the later,
named and audited decision of a clinician (a pregnancy re-dated by an early scan, a wrong LMP
keyed at the modality); the DICOM LMP is used only when nothing was entered. The page and the
charts say which one they used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal

from sqlalchemy.orm import Session, sessionmaker

from db.models import Study, utcnow
from worker.ops.audit import Actor, record, refusals
from worker.ops.operations import OperationError

#: The span ``ga_by_dates_days`` accepts as a pregnancy's (worker.models.fetal_head.growth).
MAX_DAYS = 45 * 7
#: Measurements the worker stored from the DICOM LMP: stale when an entered GA wins.
BY_DATES_KEYS = frozenset(
    {
        "gestational_age_by_dates_days",
        "head_circumference_z",
        "head_circumference_centile",
        "brain_volume_z",
    }
)
_GA = re.compile(r"^\s*(\d{1,2})\s*w\s*(?:(\d{1,2})\s*d)?\s*$", re.IGNORECASE)


class DatingError(ValueError):
    """An entered LMP or GA that cannot be read; the message says what to type."""


def parse_ga(text: str) -> int:
    """``24w3d`` (or ``24w``) as days; weeks 0-45, days 0-6."""
    found = _GA.match(text)
    if found is None:
        raise DatingError(f"GA {text.strip()!r}: write weeks and days, e.g. 24w3d")
    weeks, days = int(found.group(1)), int(found.group(2) or 0)
    if days > 6:
        raise DatingError(f"GA {text.strip()!r}: days are 0-6 (7 days are a week)")
    total = weeks * 7 + days
    if total > MAX_DAYS:
        raise DatingError(f"GA {text.strip()!r}: more than 45 weeks is not a pregnancy's")
    return total


def parse_lmp(text: str) -> str:
    """``YYYY-MM-DD`` (or DICOM ``YYYYMMDD``) as DICOM DA."""
    raw = text.strip()
    try:
        day = date.fromisoformat(raw if "-" in raw else f"{raw[:4]}-{raw[4:6]}-{raw[6:]}")
    except ValueError:
        raise DatingError(f"LMP {raw!r}: write a date as YYYY-MM-DD") from None
    return day.strftime("%Y%m%d")


def _da(value: str | None) -> date | None:
    if not value or len(value) != 8 or not value.isdigit():
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def lmp_days(lmp: str, study_date: str | None) -> int:
    """The GA in days on the study date from ``lmp`` (DA); DatingError when the study has no
    date or the span is not a pregnancy's (0-45 weeks)."""
    start, end = _da(lmp), _da(study_date)
    if end is None:
        raise DatingError("the study has no study date: enter the GA on the study date instead")
    assert start is not None
    days = (end - start).days
    if not 0 <= days <= MAX_DAYS:
        raise DatingError(
            f"LMP {start.isoformat()} is {days} days from the study date "
            f"{end.isoformat()}: not 0-45 weeks"
        )
    return days


@dataclass(frozen=True)
class Dating:
    """The GA by dates the growth standing uses, and where it comes from."""

    days: float
    source: Literal["entered", "dicom"]
    by: str | None = None
    at: datetime | None = None
    lmp: str | None = None  # DA, when entered as an LMP

    def describe(self) -> str:
        """``entered by NAME (LMP 2026-05-01)`` or ``from the DICOM LMP``."""
        if self.source == "dicom":
            return "from the DICOM LMP"
        how = (
            f"LMP {self.lmp[:4]}-{self.lmp[4:6]}-{self.lmp[6:]}"
            if self.lmp
            else "GA on the study date"
        )
        when = f" at {self.at.strftime('%Y-%m-%d %H:%M')} UTC" if self.at else ""
        return f"entered by {self.by or '-'}{when} ({how})"


def entered(study: Study) -> Dating | None:
    """The study's entered GA by dates, in days on the study date; None when none was entered
    (or an entered LMP no longer fits the study date)."""
    if study.ga_days is not None:
        return Dating(float(study.ga_days), "entered", study.ga_by, study.ga_at)
    if study.ga_lmp is not None:
        try:
            days = lmp_days(study.ga_lmp, study.study_date)
        except DatingError:
            return None
        return Dating(float(days), "entered", study.ga_by, study.ga_at, study.ga_lmp)
    return None


def effective(study: Study | None, dicom_days: float | None) -> Dating | None:
    """The rule: the entered GA by dates when there is one, else the DICOM LMP's (the
    ``gestational_age_by_dates_days`` the worker stored), else None."""
    chosen = entered(study) if study is not None else None
    if chosen is not None:
        return chosen
    return Dating(dicom_days, "dicom") if dicom_days is not None else None


def set_dating(
    session_factory: sessionmaker[Session],
    study_id: int,
    *,
    lmp: str | None = None,
    ga_days: int | None = None,
    actor: Actor,
) -> Dating | None:
    """Store ``lmp`` (DA) or ``ga_days`` (on the study date) on the study, or clear it when
    both are None; audited as ``set_ga`` (a refusal too). Returns the entered dating."""
    if lmp is not None and ga_days is not None:
        raise DatingError("enter an LMP or a GA on the study date, not both")
    with refusals(session_factory, actor, "set_ga"), session_factory.begin() as session:
        study = session.get(Study, study_id)
        if study is None:
            raise OperationError(f"no study {study_id}")
        if lmp is not None:
            try:
                lmp_days(lmp, study.study_date)
            except DatingError as exc:
                raise OperationError(str(exc)) from exc
        study.ga_lmp, study.ga_days = lmp, ga_days
        cleared = lmp is None and ga_days is None
        study.ga_by = None if cleared else actor.user
        study.ga_at = None if cleared else utcnow()
        found = entered(study)
        record(session, actor, "set_ga", study_id=study_id, detail=_detail(found))
        return found


def _detail(found: Dating | None) -> str:
    if found is None:
        return "GA by dates cleared: the DICOM LMP is used again"
    weeks = f"{int(found.days) // 7}w{int(found.days) % 7}d"
    return f"GA by dates {weeks} on the study date ({found.describe()})"
