"""``medseg status|jobs|retry|cancel``: the operators' commands."""

from __future__ import annotations

import argparse
import functools
import re
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from db.models import JobState, utcnow
from worker.cli.audit import NOT_ALLOWED, add_user_option, operator, permitted
from worker.core.worker_beats import BEAT_MAX_AGE_S
from worker.ops.running import duration as _duration

_SINCE = re.compile(r"^(\d+)([mhd])$")
#: The workers a probe left in Redis are taken when this fresh (the gateway looks every 15 s).
SHARED_MAX_AGE_S = 40.0
#: How long ``status`` waits for the workers' replies when no probe left a view.
ASK_TIMEOUT_S = 0.5
#: ``medseg status`` exits with this when it prints PROBLEM lines.
EXIT_PROBLEMS = 1


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
    from worker.cli.output import table
    from worker.ops.running import runs

    running = runs(jobs, _alive_workers()) if any(j.state is JobState.RUNNING for j in jobs) else {}
    rows = []
    for job in jobs:
        run = running.get(job.id)
        tail = (
            f"on {run.label}"
            if run is not None
            else job.error or _delivery_failures(job) or job.series.series_instance_uid
        )
        study = job.series.study
        rows.append(
            (
                job.id,
                job.state.value,
                job.model_name,
                f"{job.attempts}/{job.max_attempts}",
                job.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                study.patient_id or "-",
                study.accession_number or "-",
                job.series.modality or "-",
                job.series.calling_ae or "-",
                " ".join(tail.split()),
            )
        )
    headers = ["job", "state", "model", "try", "created (UTC)", "patient ID", "accession"]
    table([*headers, "mod", "calling AE", "worker / series / error"], rows)
    return 0


def _alive_workers() -> list[str] | None:
    """The workers answering the broker: from their heartbeats in Redis, else those a
    gateway's or dashboard's probe found in the last seconds, else asked now (a broadcast);
    None when the broker cannot be asked."""
    import redis

    from worker.core.broker import create_control_app
    from worker.core.broker_probe import look
    from worker.core.settings import get_settings

    settings = get_settings()
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=1)
    app = _LazyControl(lambda: create_control_app(settings))
    view = look(
        client,
        app,
        settings.broker_key_prefix,
        ASK_TIMEOUT_S,
        shared_max_age_s=SHARED_MAX_AGE_S,
        beats_max_age_s=BEAT_MAX_AGE_S,
    )
    return view.workers


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
    if args.failed:
        from worker.ops.operations import count_bad_input

        left = count_bad_input(_session_factory())
        if left:
            print(f"left: {left} job(s) failed on their input (they would fail again; name them)")
    return 0


def _cmd_rerun(args: argparse.Namespace) -> int:
    from worker.ops.operations import OperationError
    from worker.ops.reruns import rerun, rerun_plan

    if args.dry_run:
        try:
            series = rerun_plan(_session_factory(), args.model, since=args.since, force=args.force)
        except OperationError as exc:
            print(f"medseg rerun: {exc}", file=sys.stderr)
            return 1
        listed = ", ".join(map(str, series)) or "-"
        print(f"would queue {len(series)} job(s) (dry run, nothing queued); series: {listed}")
        return 0
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


def _print_status(session_factory: Any) -> int:
    """Print the status; the number of PROBLEM lines."""
    import redis

    from worker.cli.output import line
    from worker.core.broker import create_control_app
    from worker.core.settings import get_settings
    from worker.ops.health import problems
    from worker.ops.operations import status

    settings = get_settings()
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=1)
    app = _LazyControl(lambda: create_control_app(settings))
    s = status(
        session_factory,
        client,
        app,
        settings.broker_key_prefix,
        shared_max_age_s=SHARED_MAX_AGE_S,
        beats_max_age_s=BEAT_MAX_AGE_S,
        ask_timeout_s=ASK_TIMEOUT_S,
    )
    found = problems(s, None)
    for problem in found:
        line(f"PROBLEM: {problem}", "bold red")
    depth = ", ".join(f"{q} {'?' if n is None else n}" for q, n in s.queue_depth.items())
    down = None in s.queue_depth.values()
    line(f"queues: {depth}" + ("  (broker unreachable)" if down else ""), "red" if down else "")
    workers = (
        "unknown (broker unreachable)"
        if s.workers is None
        else (", ".join(s.workers) or "none alive")
    )
    line(f"workers: {workers}", "" if s.workers else "red")
    oldest = "-" if s.oldest_waiting_s is None else _duration(s.oldest_waiting_s)
    line(f"oldest waiting job: {oldest}   finished in the last hour: {s.finished_hour}")
    for label, counts in (("last hour", s.by_state_hour), ("last day", s.by_state_day)):
        line(
            f"jobs {label}: " + (", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none")
        )
    rate = "-" if s.failure_rate_day is None else f"{100 * s.failure_rate_day:.1f} %"
    line(f"failure rate (last day): {rate}")
    line(
        f"deliveries failed: {s.deliveries_failed}"
        + (
            "  (medseg deliver; medseg deliver --failed sends them again)"
            if s.deliveries_failed
            else ""
        ),
        "yellow" if s.deliveries_failed else "",
    )
    line(
        f"awaiting review: {s.awaiting_review} needs_review job(s) undecided"
        + ("  (medseg review --pending)" if s.awaiting_review else ""),
        "yellow" if s.awaiting_review else "",
    )
    skipped = sum(s.skipped_reasons_day.values())
    line(f"not processed (last day): {skipped} series" + (" by reason:" if skipped else ""))
    for reason, count in s.skipped_reasons_day.items():
        line(f"  {count:5d}  {reason}")
    return len(found)


class _LazyControl:
    """A Celery control app made only if the workers must be asked: when the workers'
    heartbeats or a probe's view are fresh in Redis, ``status`` never imports Celery (part of
    answering within a second)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make

    @functools.cached_property
    def control(self) -> Any:
        return self._make().control  # not the worker's app: no model registry to load


def _cmd_status(args: argparse.Namespace) -> int:
    """Exit 0 when all is well, ``EXIT_PROBLEMS`` when PROBLEM lines were printed; with
    ``--watch``, refresh every SECONDS (the time the status took included) until Ctrl-C."""
    factory = _session_factory()
    while True:
        started = time.monotonic()
        if args.watch:
            print("\033[2J\033[H", end="")
            now = utcnow().strftime("%Y-%m-%d %H:%M:%S")
            print(f"medseg status at {now} UTC (every {args.watch:g} s; Ctrl-C ends)")
        found = _print_status(factory)
        if not args.watch:
            return EXIT_PROBLEMS if found else 0
        sys.stdout.flush()
        time.sleep(max(0.0, args.watch - (time.monotonic() - started)))


def _cmd_cleanup(args: argparse.Namespace) -> int:
    from worker.core.retention import purge_inputs

    count, size = purge_inputs(_session_factory(), utcnow() - args.older_than, dry_run=args.dry_run)
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {count} instance file(s), {size / 1e6:.1f} MB")
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
        help="every failed or quarantined job, except those that failed on their input "
        "(they would fail again) and cancelled ones",
    )
    add_user_option(retry)
    retry.set_defaults(func=_cmd_retry)

    rerun = sub.add_parser(
        "rerun", help="run a model again (its current version), keep old results"
    )
    rerun.add_argument("--model", required=True)
    rerun.add_argument("--since", type=_since, help="only series it ran on since, e.g. 7d")
    rerun.add_argument("--force", action="store_true", help="even when an identical job exists")
    rerun.add_argument(
        "--dry-run", action="store_true", help="say which series would get a job; queue nothing"
    )
    add_user_option(rerun)
    rerun.set_defaults(func=_cmd_rerun)

    cleanup = sub.add_parser(
        "cleanup", help="delete received instances of finished, delivered series (records stay)"
    )
    cleanup.add_argument("--older-than", type=_since, required=True, help="e.g. 7d")
    cleanup.add_argument("--dry-run", action="store_true")
    cleanup.set_defaults(func=_cmd_cleanup)

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

    from worker.cli.decisions import add_decision_commands  # it imports this module

    add_decision_commands(sub)

    from worker.cli.learning import add_learning_commands  # it imports this module

    add_learning_commands(sub)
