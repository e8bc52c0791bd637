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
    if args.job_id is None or args.decision is None or not args.by:
        print("medseg review: give JOB_ID accept|reject --by NAME, or --pending", file=sys.stderr)
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


def add_decision_commands(sub: Any) -> None:
    review = sub.add_parser(
        "review",
        help="accept or reject a needs_review result (who, when, why are recorded); "
        "--pending: the worklist",
    )
    review.add_argument("job_id", type=int, nargs="?")
    review.add_argument("decision", nargs="?", choices=["accept", "reject"])
    review.add_argument(
        "--pending",
        action="store_true",
        help="list the flagged results no reviewer has decided, oldest first, with the reasons",
    )
    review.add_argument("--by", metavar="NAME", help="who decides (also the audit trail's user)")
    review.add_argument("--note", help="why (kept with the result)")
    review.add_argument("--force", action="store_true", help="replace an earlier decision")
    review.set_defaults(func=_cmd_review)

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
