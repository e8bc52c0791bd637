"""What an operator types to name a study: its Study or Series Instance UID, its accession
number, or one of its jobs' IDs. ``medseg show`` takes any of them."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Job, Series, Study


@dataclass(frozen=True)
class Match:
    study_id: int
    how: str  # "study UID", "series UID", "accession number", "job ID"


def find_studies(session_factory: sessionmaker[Session], key: str) -> list[Match]:
    """The studies ``key`` names, each once (an accession number may name several; digits may
    be a job ID and an accession number at once)."""
    key = key.strip()
    queries = [
        ("study UID", select(Study.id).where(Study.study_instance_uid == key)),
        ("series UID", select(Series.study_id).where(Series.series_instance_uid == key)),
        ("accession number", select(Study.id).where(Study.accession_number == key)),
    ]
    if key.isdigit():
        job = select(Series.study_id).join(Job, Job.series_id == Series.id)
        queries.append(("job ID", job.where(Job.id == int(key))))
    found: dict[int, str] = {}
    with session_factory() as session:
        for how, query in queries:
            for study_id in session.scalars(query):
                found.setdefault(int(study_id), how)
    return [Match(study_id, how) for study_id, how in sorted(found.items())]
