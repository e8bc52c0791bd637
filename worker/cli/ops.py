"""``medseg status|jobs|retry|cancel``: the operators' commands."""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime, timedelta
from typing import Any

from db.models import JobState, utcnow
from worker.cli.audit import NOT_ALLOWED, add_user_option, operator, permitted
from worker.ops.running import duration as _duration

_SINCE = re.compile(r"^(\d+)([mhd])$")


def _since(text: str) -> datetime:
    match = _SINCE.match(text)
    if not match:
        raise argparse.ArgumentTypeError("use a number and m, h or d (e.g. 30m, 2h, 7d)")
    amount, unit = int(match.group(1)), match.group(2)
    return utcnow() - timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[unit]: amount})


def _session_factory() -> Any:
    from db.session import make_engine, make_session_factory
    from worker.core.settings import get_settings

    return make_session_factory(make_engine(get_settings().database_url))


def _cmd_jobs(args: argparse.Namespace) -> int:
    from worker.ops.deliveries import DELIVERY_FAILED
    from worker.ops.operations import list_jobs

    failed_delivery = args.state == DELIVERY_FAILED
    state = JobState(args.state) if args.state and not failed_delivery else None
    jobs = list_jobs(
        _session_factory(),
        state=state,
        since=args.since,
        model=args.model,
        delivery_failed=failed_delivery,
        limit=args.limit,
    )
    from worker.ops.running import runs

    running = runs(jobs, _alive_workers()) if any(j.state is JobState.RUNNING for j in jobs) else {}
    print(f"{'job':>6} {'state':<12} {'model':<20} {'try':>5} {'created':<20} series / error")
    for job in jobs:
        created = job.created_at.strftime("%Y-%m-%d %H:%M:%S")
        run = running.get(job.id)
        tail = (
            f"on {run.label}"
            if run is not None
            else job.error or _delivery_failures(job) or job.series.series_instance_uid
        )
        print(
            f"{job.id:>6} {job.state.value:<12} {job.model_name:<20} "
            f"{job.attempts:>2}/{job.max_attempts:<2} {created:<20} {' '.join(tail.split())}"
        )
    return 0


def _alive_workers() -> list[str] | None:
    """The workers answering the broker (a 1 s broadcast); None when it cannot be asked."""
    from worker.core.broker import create_control_app
    from worker.core.broker_probe import ask_workers
    from worker.core.settings import get_settings

    workers, _ = ask_workers(create_control_app(get_settings()))
    return workers


def _delivery_failures(job: Any) -> str:
    """ "delivery to pacs failed: ..." for each delivery of the job that failed for good."""
    from db.models import DeliveryState

    return "; ".join(
        f"delivery {d.id} to {d.destination} failed: {d.error or '-'}"
        for result in job.results
        for d in result.deliveries
        if d.state is DeliveryState.FAILED
    )


def _cmd_retry(args: argparse.Namespace) -> int:
    from worker.ops.operations import OperationError, retry

    if not args.job_ids and not args.failed:
        print("medseg retry: give JOB_ID(s) or --failed", file=sys.stderr)
        return 2
    one = args.job_ids[0] if len(args.job_ids) == 1 and not args.failed else None
    if not permitted(args, "retry_all" if args.failed else "retry", job_id=one):
        return NOT_ALLOWED
    try:
        queued = retry(
            _session_factory(), None if args.failed else args.job_ids, actor=operator(args)
        )
    except OperationError as exc:
        print(f"medseg retry: {exc}", file=sys.stderr)
        return 1
    print(f"queued again: {', '.join(map(str, queued)) or 'nothing'}")
    return 0


def _cmd_rerun(args: argparse.Namespace) -> int:
    from worker.ops.operations import OperationError, rerun

    if not permitted(args, "rerun"):
        return NOT_ALLOWED
    try:
        from worker.core.settings import get_settings

        created = rerun(
            _session_factory(),
            args.model,
            since=args.since,
            force=args.force,
            max_attempts=get_settings().job_max_attempts,
            actor=operator(args),
        )
    except OperationError as exc:
        print(f"medseg rerun: {exc}", file=sys.stderr)
        return 1
    print(f"queued {len(created)} job(s): {', '.join(map(str, created)) or '-'}")
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    from worker.ops.operations import OperationError, cancel

    factory, failed = _session_factory(), 0
    for job_id in args.job_ids:
        if not permitted(args, "cancel", job_id=job_id):
            return NOT_ALLOWED
        try:
            cancel(factory, job_id, actor=operator(args))
        except OperationError as exc:
            print(f"medseg cancel: {exc}", file=sys.stderr)
            failed += 1
        else:
            print(f"job {job_id} cancelled")
    return 1 if failed else 0


def _print_status(session_factory: Any) -> None:
    import redis

    from worker.core.broker import create_control_app
    from worker.core.settings import get_settings
    from worker.ops.health import problems
    from worker.ops.operations import status

    settings = get_settings()
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=1)
    app = create_control_app(settings)  # not the worker's app: no model registry to load
    s = status(session_factory, client, app, settings.broker_key_prefix)
    for problem in problems(s, None):
        print(f"PROBLEM: {problem}")
    depth = ", ".join(f"{q} {'?' if n is None else n}" for q, n in s.queue_depth.items())
    print(f"queues: {depth}" + ("  (broker unreachable)" if None in s.queue_depth.values() else ""))
    print(
        "workers: "
        + (
            "unknown (broker unreachable)"
            if s.workers is None
            else (", ".join(s.workers) or "none alive")
        )
    )
    oldest = "-" if s.oldest_waiting_s is None else _duration(s.oldest_waiting_s)
    print(f"oldest waiting job: {oldest}   finished in the last hour: {s.finished_hour}")
    for label, counts in (("last hour", s.by_state_hour), ("last day", s.by_state_day)):
        print(
            f"jobs {label}: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none")
        )
    rate = "-" if s.failure_rate_day is None else f"{100 * s.failure_rate_day:.1f} %"
    print(f"failure rate (last day): {rate}")
    print(
        f"deliveries failed: {s.deliveries_failed}"
        + (
            "  (medseg deliver; medseg deliver --failed sends them again)"
            if s.deliveries_failed
            else ""
        )
    )
    print(
        f"awaiting review: {s.awaiting_review} needs_review job(s) undecided"
        + ("  (medseg review --pending)" if s.awaiting_review else "")
    )
    skipped = sum(s.skipped_reasons_day.values())
    print(f"not processed (last day): {skipped} series" + (" by reason:" if skipped else ""))
    for reason, count in s.skipped_reasons_day.items():
        print(f"  {count:5d}  {reason}")


def _cmd_status(args: argparse.Namespace) -> int:
    factory = _session_factory()
    while True:
        if args.watch:
            print("\033[2J\033[H", end="")
            now = utcnow().strftime("%Y-%m-%d %H:%M:%S")
            print(f"medseg status at {now} UTC (every {args.watch:g} s; Ctrl-C ends)")
        _print_status(factory)
        if not args.watch:
            return 0
        time.sleep(args.watch)


def _cmd_cleanup(args: argparse.Namespace) -> int:
    from worker.core.retention import purge_inputs

    count, size = purge_inputs(_session_factory(), utcnow() - args.older_than, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {count} instance file(s), {size / 1e6:.1f} MB")
    return 0


def _print_pending() -> int:
    from worker.ops.review import pending_reviews

    pending = pending_reviews(_session_factory())
    print(f"{'job':>6} {'model':<24} {'mod':<4} {'flagged (UTC)':<20} {'waiting':<12} why")
    for p in pending:
        flagged = p.flagged_at.strftime("%Y-%m-%d %H:%M:%S")
        why = "; ".join(p.reasons) or "-"
        print(
            f"{p.job_id:>6} {p.model:<24} {p.modality:<4} {flagged:<20} "
            f"{_duration(p.waiting_s):<12} {why}"
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
            _session_factory(),
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


def add_ops_commands(sub: Any) -> None:
    status = sub.add_parser("status", help="queues, workers, jobs by state, failure rate")
    status.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS")
    status.set_defaults(func=_cmd_status)

    jobs = sub.add_parser("jobs", help="list jobs")
    jobs.add_argument(
        "--state",
        choices=[s.value for s in JobState] + ["delivery_failed"],
        help="a job state, or delivery_failed: jobs with a delivery that failed for good",
    )
    jobs.add_argument("--since", type=_since, help="created since, e.g. 30m, 2h, 7d")
    jobs.add_argument("--model", metavar="NAME", help="only this model's jobs (medseg models)")
    jobs.add_argument("--limit", type=int, default=200, help="rows, newest first (default 200)")
    jobs.set_defaults(func=_cmd_jobs)

    retry = sub.add_parser(
        "retry", help="queue failed/quarantined/cancelled jobs again; publish a queued job again"
    )
    retry.add_argument("job_ids", nargs="*", type=int, metavar="JOB_ID", help="job(s) to retry")
    retry.add_argument(
        "--failed",
        action="store_true",
        help="every failed or quarantined job (never a cancelled one)",
    )
    add_user_option(retry)
    retry.set_defaults(func=_cmd_retry)

    rerun = sub.add_parser(
        "rerun", help="run a model again (its current version), keep old results"
    )
    rerun.add_argument("--model", required=True)
    rerun.add_argument("--since", type=_since, help="only series it ran on since, e.g. 7d")
    rerun.add_argument("--force", action="store_true", help="even when an identical job exists")
    add_user_option(rerun)
    rerun.set_defaults(func=_cmd_rerun)

    cleanup = sub.add_parser(
        "cleanup", help="delete received instances of finished, delivered series (records stay)"
    )
    cleanup.add_argument("--older-than", type=_since, required=True, help="e.g. 7d")
    cleanup.add_argument("--dry-run", action="store_true")
    cleanup.set_defaults(func=_cmd_cleanup)

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

    cancel = sub.add_parser(
        "cancel",
        help="cancel queued, failed or quarantined jobs",
        description="Cancel jobs: a queued one does not run, a failed or quarantined one is "
        "not retried (retry --failed and Retry all leave cancelled jobs alone). A running "
        "job finishes its attempt. `medseg retry JOB_ID` revives a cancelled job.",
    )
    cancel.add_argument("job_ids", type=int, nargs="+", metavar="JOB_ID", help="job(s) to cancel")
    add_user_option(cancel)
    cancel.set_defaults(func=_cmd_cancel)
