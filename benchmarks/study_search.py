"""Study browser searches over many studies: the query layer's time per search, best of N.

Run: python benchmarks/study_search.py [--studies 20000] [--repeats 5] [--database-url URL]
A fresh database (SQLite in a temporary folder unless --database-url names an empty one,
migrated here) gets N studies of one series each (one in ten unrouted, the others with one
job in a random state), 4 studies per patient ID; then each search of the dashboard's
/studies page (``worker.ops.studies.search``: the count and one page of 50) is timed.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from db.migrate import upgrade
from db.models import Job, JobState, Series, SeriesStatus, Study, utcnow
from db.session import make_engine, make_session_factory
from worker.ops.studies import SortKey, StudyFilter, search

SEARCHES: list[tuple[str, dict[str, Any], SortKey, int]] = [
    ("first page, no filter", {}, "received", 1),
    ("patient ID", {"patient_id": "P00001"}, "received", 1),
    ("accession number", {"accession": "A000001"}, "received", 1),
    (
        "study date month + modality CT",
        {"since": date(2026, 3, 1), "until": date(2026, 3, 31), "modality": "CT"},
        "received",
        1,
    ),
    ("state failed", {"state": "failed"}, "received", 1),
    ("state unrouted", {"state": "unrouted"}, "received", 1),
    ("state delivery_failed", {"state": "delivery_failed"}, "received", 1),
    ("model + calling AE", {"model": "lung-ct", "calling_ae": "CT_A"}, "received", 1),
    ("sort by patient ID, page 100", {}, "patient_id", 100),
]


def fill(factory: sessionmaker[Session], studies: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    now = utcnow()
    with factory.begin() as session:
        session.execute(
            insert(Study),
            [
                {
                    "id": i + 1,
                    "study_instance_uid": f"1.9.{i}",
                    "patient_id": f"P{i % max(1, studies // 4):05d}",
                    "accession_number": f"A{i:06d}",
                    "study_date": f"2026{1 + i % 12:02d}{1 + i % 28:02d}",
                    "created_at": now - timedelta(minutes=i),
                }
                for i in range(studies)
            ],
        )
        session.execute(
            insert(Series),
            [
                {
                    "id": i + 1,
                    "study_id": i + 1,
                    "series_instance_uid": f"1.9.{i}.1",
                    "modality": rng.choice(["CT", "MR", "US", "CR"]),
                    "calling_ae": rng.choice(["CT_A", "US_B", "CR_C"]),
                    "status": SeriesStatus.UNROUTED if i % 10 == 0 else SeriesStatus.COMPLETE,
                }
                for i in range(studies)
            ],
        )
        session.execute(
            insert(Job),
            [
                {
                    "series_id": i + 1,
                    "model_name": rng.choice(["lung-ct", "fetal-head"]),
                    "model_version": "1",
                    "queue": "cpu",
                    "state": rng.choice(list(JobState)),
                }
                for i in range(studies)
                if i % 10
            ],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--studies", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--database-url", help="an empty database (default: SQLite, temporary)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'studies.db'}"
        upgrade(url)
        engine = make_engine(url)
        factory = make_session_factory(engine)
        fill(factory, args.studies)
        print(f"{engine.dialect.name}, {args.studies} studies; best of {args.repeats}")
        for label, filters, sort, page in SEARCHES:
            wanted = StudyFilter(**filters)
            search(factory, wanted, sort=sort, page=page)  # warm
            best = float("inf")
            for _ in range(args.repeats):
                start = time.perf_counter()
                found = search(factory, wanted, sort=sort, page=page)
                best = min(best, time.perf_counter() - start)
            print(f"{label:<34} {1000 * best:8.1f} ms  {found.total:>6} match(es)")
        engine.dispose()


if __name__ == "__main__":
    main()
