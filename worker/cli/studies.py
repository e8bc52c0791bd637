"""``medseg studies``: find studies by patient ID, accession number, study date, modality,
calling AE, state or model (the dashboard's study browser in a terminal)."""

from __future__ import annotations

import argparse
import re
import sys
from datetime import date
from typing import Any

_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


def _day(text: str) -> date:
    """YYYY-MM-DD, YYYYMMDD, or a period back from today: 7d, 12h (its date)."""
    match = _DATE.match(text)
    try:
        if match:
            return date(*(int(g) for g in match.groups()))
        from worker.cli.ops import _since

        return _since(text).date()
    except (ValueError, argparse.ArgumentTypeError) as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give a date (2026-11-30 or 20261130) or a period back (7d, 12h)"
        ) from exc


def _cmd_studies(args: argparse.Namespace) -> int:
    from worker.cli.ops import _session_factory
    from worker.ops.studies import SearchError, StudyFilter, search, study_date_text

    try:
        filters = StudyFilter(
            patient_id=args.patient_id or "",
            accession=args.accession or "",
            since=args.since,
            until=args.until,
            modality=args.modality or "",
            calling_ae=args.calling_ae or "",
            state=args.state or "",
            model=args.model or "",
        )
        found = search(
            _session_factory(),
            filters,
            sort=args.sort,
            descending=not args.ascending,
            per_page=args.limit,
        )
    except SearchError as exc:
        print(f"medseg studies: {exc}", file=sys.stderr)
        return 2
    print(
        f"{'study':>6} {'received (UTC)':<19} {'date':<10} {'patient ID':<16} "
        f"{'accession':<16} {'mod':<6} {'calling AE':<16} {'jobs':<28} study UID"
    )
    for row in found.rows:
        print(
            f"{row.id:>6} {row.received_at:<19} {study_date_text(row.study_date):<10} "
            f"{row.patient_id or '-':<16} {row.accession_number or '-':<16} "
            f"{','.join(row.modalities) or '-':<6} {','.join(row.calling_aes) or '-':<16} "
            f"{_jobs(row):<28} {row.study_instance_uid}"
        )
        for series in row.series:
            if series.not_processed:
                print(f"{'':>6}   series {series.id} {series.modality}: {series.not_processed}")
    shown = len(found.rows)
    more = f" (the first {shown}; --limit N shows more)" if found.total > shown else ""
    print(f"{found.total} stud{'y' if found.total == 1 else 'ies'}{more}")
    return 0


def _jobs(row: Any) -> str:
    counts = [f"{state} {n}" for state, n in row.jobs_by_state.items()]
    if row.delivery_failed:
        counts.append("delivery_failed")
    return ", ".join(counts) or "none"


def add_studies_commands(sub: Any) -> None:
    from db.models import JobState

    studies = sub.add_parser(
        "studies",
        help="find studies: by patient ID, accession, study date, modality, AE, state, model",
        description="Studies matching every option given, newest received first, with the "
        "series no model accepted (or whose job skipped them) and why. Patient ID matches "
        "as a prefix in any case, accession number exactly. `medseg show STUDY_UID` shows "
        "one in full.",
    )
    studies.add_argument(
        "--patient-id", metavar="ID", help="Patient ID (0010,0020): a prefix, any case"
    )
    studies.add_argument("--accession", metavar="NUMBER", help="accession number, exact")
    studies.add_argument(
        "--since", type=_day, metavar="DATE", help="study date from (2026-11-01, or 7d back)"
    )
    studies.add_argument("--until", type=_day, metavar="DATE", help="study date up to, inclusive")
    studies.add_argument("--modality", metavar="CT|MR|US|CR|...", help="a series' modality")
    studies.add_argument("--calling-ae", metavar="AE", help="the AE title that sent a series")
    studies.add_argument(
        "--state",
        choices=[s.value for s in JobState] + ["delivery_failed", "unrouted"],
        help="a job state; delivery_failed: a delivery failed for good; unrouted: a series "
        "no model accepts",
    )
    studies.add_argument("--model", metavar="NAME", help="studies a model ran on")
    studies.add_argument(
        "--sort",
        choices=["received", "study_date", "patient_id"],
        default="received",
        help="default: received (newest first)",
    )
    studies.add_argument("--ascending", action="store_true", help="oldest / smallest first")
    studies.add_argument("--limit", type=int, default=50, help="rows (default 50, at most 200)")
    studies.set_defaults(func=_cmd_studies)
