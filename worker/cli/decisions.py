"""``medseg review`` (accept or reject a flagged result, the worklist) and ``medseg route``
(send a series to a model by hand): decisions an operator or a reviewer makes about one
result or one series."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from worker.cli import ops
from worker.cli.audit import NOT_ALLOWED, add_user_option, operator, permitted
from worker.ops.running import duration


def _print_pending() -> int:
    from worker.cli.output import table
    from worker.ops.review import pending_reviews

    table(
        ["job", "model", "modality", "flagged (UTC)", "waiting", "why"],
        (
            (
                p.job_id,
                p.model,
                p.modality,
                p.flagged_at.strftime("%Y-%m-%d %H:%M:%S"),
                duration(p.waiting_s),
                "; ".join(p.reasons) or "-",
            )
            for p in pending_reviews(ops._session_factory())
        ),
    )
    return 0


def _cmd_review(args: argparse.Namespace) -> int:
    from worker.core.settings import get_settings
    from worker.ops.audit import Actor
    from worker.ops.operations import OperationError
    from worker.ops.review import Decision, decide

    if args.pending:
        return _print_pending()
    if args.decision == "correct":
        return _cmd_correct(args)
    if args.job_id is None or args.decision is None or not args.by:
        print(
            "medseg review: give JOB_ID accept|reject --by NAME, JOB_ID correct "
            "cx=..,cy=..,a=..,b=..,angle=.. --by NAME, or --pending",
            file=sys.stderr,
        )
        return 2

    decisions: dict[str, Decision] = {"accept": "accepted", "reject": "rejected"}
    if not permitted(args, args.decision, actor=Actor(args.by, "cli"), job_id=args.job_id):
        return NOT_ALLOWED
    try:
        done = decide(
            ops._session_factory(),
            args.job_id,
            decisions[args.decision],
            by=args.by,
            note=args.note,
            force=args.force,
            destinations=get_settings().destinations,
            actor=Actor(args.by, "cli"),
        )
    except OperationError as exc:
        print(f"medseg review: {exc}", file=sys.stderr)
        return 1
    print(f"job {done.job_id} {done.decision} by {args.by}")
    if done.released:
        print(f"queued for delivery to: {', '.join(done.released)}")
    if done.withheld:
        print(f"still withheld from: {', '.join(done.withheld)} (see medseg show)")
    return 0


def _cmd_correct(args: argparse.Namespace) -> int:
    from worker.corrections.ellipse import FIELDS, EllipseError, parse
    from worker.ops.audit import Actor
    from worker.ops.corrections import request_ellipse
    from worker.ops.operations import OperationError

    actor = Actor(args.by, "cli")
    if not permitted(args, "correct", actor=actor, job_id=args.job_id):
        return NOT_ALLOWED
    try:
        ellipse = parse(args.values or "")
        values = dict(
            zip(
                FIELDS,
                (ellipse.cx, ellipse.cy, ellipse.a, ellipse.b, ellipse.angle_deg),
                strict=True,
            )
        )
        correction = request_ellipse(
            ops._session_factory(), args.job_id, values, by=args.by, note=args.note, actor=actor
        )
    except (EllipseError, OperationError) as exc:
        print(f"medseg review: {exc}", file=sys.stderr)
        return 1
    print(
        f"correction {correction} of job {args.job_id} recorded by {args.by}; the worker "
        "recomputes the measurements and delivers the corrected result (medseg corrections)"
    )
    return 0


def _cmd_corrections(args: argparse.Namespace) -> int:
    from worker.cli.output import table
    from worker.ops.corrections import list_corrections

    table(
        ["id", "kind", "state", "received (UTC)", "by", "job", "result", "changes or reason"],
        (
            (
                c.id,
                c.kind,
                c.state,
                c.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                f"{c.by} ({c.source})",
                c.job_id or "-",
                f"{c.replaces_result_id} -> {c.result_id}" if c.result_id else "-",
                c.reason or "; ".join(f"{k} {a} -> {b}" for k, (a, b) in c.changes.items()) or "-",
            )
            for c in list_corrections(ops._session_factory(), state=args.state)
        ),
    )
    return 0


def _cmd_route(args: argparse.Namespace) -> int:
    from worker.core.settings import get_settings
    from worker.ops.manual_route import route_by_hand
    from worker.ops.operations import OperationError

    if not permitted(args, "route"):
        return NOT_ALLOWED
    try:
        job_id = route_by_hand(
            ops._session_factory(),
            args.series,
            args.model,
            force=args.force,
            max_attempts=get_settings().job_max_attempts,
            actor=operator(args),
        )
    except OperationError as exc:
        print(f"medseg route: {exc}", file=sys.stderr)
        return 1
    print(f"job {job_id} queued: series {args.series} sent to {args.model}")
    return 0


def _study_id(key: str) -> int | None:
    """Our study ID (digits, as the dashboard's URL shows) or a Study Instance UID."""
    from worker.ops.lookup import find_studies

    if key.isdigit():
        return int(key)
    found = [m.study_id for m in find_studies(ops._session_factory(), key) if m.how == "study UID"]
    return found[0] if found else None


def _cmd_study_ga(args: argparse.Namespace) -> int:
    from worker.ops.dating import DatingError, parse_ga, parse_lmp, set_dating
    from worker.ops.operations import OperationError

    study_id = _study_id(args.study)
    if study_id is None:
        print(f"medseg study-ga: no study {args.study!r}", file=sys.stderr)
        return 1
    actor = operator(args)
    if not permitted(args, "set_ga", actor=actor, study_id=study_id):
        return NOT_ALLOWED
    try:
        found = set_dating(
            ops._session_factory(),
            study_id,
            lmp=parse_lmp(args.lmp) if args.lmp else None,
            ga_days=parse_ga(args.ga) if args.ga else None,
            actor=actor,
        )
    except (DatingError, OperationError) as exc:
        print(f"medseg study-ga: {exc}", file=sys.stderr)
        return 1
    if found is None:
        print(f"study {study_id}: GA by dates cleared (the DICOM LMP is used)")
    else:
        days = int(found.days)
        print(
            f"study {study_id}: GA by dates {days // 7}w{days % 7}d on the study date, "
            f"{found.describe()}"
        )
    return 0


def add_decision_commands(sub: Any) -> None:
    review = sub.add_parser(
        "review",
        help="accept or reject a needs_review result (who, when, why are recorded); "
        "--pending: the worklist",
    )
    review.add_argument("job_id", type=int, nargs="?")
    review.add_argument("decision", nargs="?", choices=["accept", "reject", "correct"])
    review.add_argument(
        "values",
        nargs="?",
        metavar="cx=..,cy=..,a=..,b=..,angle=..",
        help="correct: the fetal head's ellipse in the model's units (mm when calibrated: "
        "centre from the top-left pixel, semi-axes a >= b, angle of a in degrees); "
        "medseg show gives the current one",
    )
    review.add_argument(
        "--pending",
        action="store_true",
        help="list the flagged results no reviewer has decided, oldest first, with the reasons",
    )
    review.add_argument("--by", metavar="NAME", help="who decides (also the audit trail's user)")
    review.add_argument("--note", help="why (kept with the result)")
    review.add_argument("--force", action="store_true", help="replace an earlier decision")
    review.set_defaults(func=_cmd_review)

    corrections = sub.add_parser(
        "corrections",
        help="reviewers' corrections: applied (what changed), and corrected SEGs received "
        "that match no result (why)",
    )
    corrections.add_argument(
        "--state", choices=["received", "applied", "unmatched", "failed"], help="only these"
    )
    corrections.set_defaults(func=_cmd_corrections)

    route = sub.add_parser(
        "route",
        help="send a series to a model by hand (one no model accepts, or whose job failed)",
        description="Queue a job of MODEL for SERIES whatever the routing rules say: a CR "
        "tagged OT, a CT without a body part. Audited as `route`.",
    )
    route.add_argument("series", metavar="SERIES", help="a Series Instance UID or our series ID")
    route.add_argument("--model", required=True, help="the model (medseg models)")
    route.add_argument("--force", action="store_true", help="even when an identical job exists")
    add_user_option(route)
    route.set_defaults(func=_cmd_route)

    study_ga = sub.add_parser(
        "study-ga",
        help="enter a study's GA by dates (LMP or GA on the study date); it wins over the "
        "DICOM Last Menstrual Date in the growth standing",
        description="Store a GA by dates on STUDY (our study ID or its Study Instance UID): "
        "the last menstrual period, or the GA on the study date. The dashboard's growth "
        "standing (HC z-score and centile, brain volume z-score, charts) uses it instead of "
        "the DICOM LMP. Audited as `set_ga`; reviewer or admin.",
    )
    study_ga.add_argument("study", metavar="STUDY", help="our study ID or Study Instance UID")
    given = study_ga.add_mutually_exclusive_group(required=True)
    given.add_argument("--lmp", metavar="YYYY-MM-DD", help="the last menstrual period")
    given.add_argument("--ga", metavar="24w3d", help="the GA on the study date")
    given.add_argument("--clear", action="store_true", help="forget it: the DICOM LMP again")
    add_user_option(study_ga)
    study_ga.set_defaults(func=_cmd_study_ga)
