"""``medseg deliver``: list the deliveries that failed for good and send them again (the
outputs as written; the model does not run)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from worker.cli.audit import NOT_ALLOWED, add_user_option, operator, permitted


def _cmd_deliver(args: argparse.Namespace) -> int:
    from worker.cli.ops import _session_factory
    from worker.core.settings import get_settings
    from worker.ops.deliveries import failed_deliveries, resend
    from worker.ops.operations import OperationError

    factory = _session_factory()
    if not args.retry and not args.failed:
        rows = failed_deliveries(factory, limit=args.limit)
        print(f"{'delivery':>8} {'job':>6} {'destination':<16} {'try':>5} {'study':<28} error")
        for d in rows:
            study = d.result.job.series.study.study_instance_uid
            print(
                f"{d.id:>8} {d.result.job_id:>6} {d.destination:<16} "
                f"{d.attempts:>2}/{d.max_attempts:<2} {study:<28} {d.error or ''}"
            )
        if not rows:
            print("no failed deliveries")
        return 0
    one = args.retry[0] if args.retry and len(args.retry) == 1 and not args.failed else None
    if not permitted(args, "redeliver_all" if args.failed else "redeliver", delivery_id=one):
        return NOT_ALLOWED
    try:
        done = resend(
            factory,
            None if args.failed else args.retry,
            get_settings().destinations,
            actor=operator(args),
        )
    except OperationError as exc:
        print(f"medseg deliver: {exc}", file=sys.stderr)
        return 1
    print(f"queued again: {', '.join(map(str, done.queued)) or 'nothing'}")
    for delivery_id, reason in done.withheld.items():
        print(f"delivery {delivery_id} now {reason}")
    for delivery_id, reason in done.left.items():
        print(f"delivery {delivery_id} left failed: {reason}")
    return 0


def add_delivery_commands(sub: Any) -> None:
    deliver = sub.add_parser(
        "deliver",
        help="list failed deliveries; send them again without running the model",
        description="Without options: the deliveries that failed for good. --retry ID... or "
        "--failed: send those again (a fresh attempt budget; the gateway publishes them).",
    )
    which = deliver.add_mutually_exclusive_group()
    which.add_argument(
        "--retry", type=int, nargs="+", metavar="ID", help="send these deliveries again"
    )
    which.add_argument("--failed", action="store_true", help="send every failed delivery again")
    deliver.add_argument("--limit", type=int, default=200, help="rows listed (default 200)")
    add_user_option(deliver)
    deliver.set_defaults(func=_cmd_deliver)
