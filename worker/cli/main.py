"""``medseg``: the one console script in front of every role."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from db.jobstate import FINISHED_WITH_RESULT
from worker.cli.audit import add_audit_commands
from worker.cli.dashboard import add_dashboard_commands
from worker.cli.deliveries import add_delivery_commands
from worker.cli.errors import one_line
from worker.cli.models import add_model_commands
from worker.cli.ops import add_ops_commands
from worker.cli.studies import add_studies_commands
from worker.cli.users import add_users_commands
from worker.runtime.logs import configure_logging

if TYPE_CHECKING:
    from worker.core.registry import ModelSpec


def _cmd_gateway(args: argparse.Namespace) -> int:
    from db.migrate import SchemaNotCurrentError
    from dicom_gateway.server import serve
    from worker.core.settings import get_settings

    try:
        serve(get_settings())
    except SchemaNotCurrentError as exc:
        print(f"medseg gateway: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_worker(args: argparse.Namespace) -> int:
    from worker.core.settings import get_settings

    metrics_port = args.metrics_port or get_settings().worker_metrics_port
    if metrics_port:  # before the pool forks: its processes inherit the setup
        from worker.runtime.metrics import start_worker_metrics

        start_worker_metrics(metrics_port, get_settings().metrics_host)
    from worker.runtime.celery_app import app

    # -E: task events from the start (also worker_send_task_events in worker.core.broker).
    argv = ["worker", "-E", "-Q", args.queues, "--loglevel", args.log_level, "-n", args.name]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    app.worker_main(argv)
    return 0


def _cmd_db(args: argparse.Namespace) -> int:
    from db.migrate import current, upgrade
    from worker.core.settings import get_settings

    url = get_settings().database_url
    if args.action == "upgrade":
        upgrade(url, args.revision)
    print(f"database at revision {current(url)}")
    return 0


def _cmd_prestart(args: argparse.Namespace) -> int:
    from worker.core.settings import get_settings
    from worker.runtime.prestart import ServiceUnavailableError, prestart

    try:
        prestart(get_settings(), args.timeout, migrate=not args.no_migrate)
    except ServiceUnavailableError as exc:
        print(f"medseg prestart: {exc}", file=sys.stderr)
        return 1
    return 0


def _cmd_echo(args: argparse.Namespace) -> int:
    from worker.core.settings import get_settings
    from worker.delivery.echo import echo

    settings = get_settings()
    port = args.port or settings.port
    called = args.aec or settings.ae_title
    try:
        status = echo(args.host, port, called, args.aet, args.timeout)
    except ConnectionError as exc:
        print(f"medseg echo: {exc}", file=sys.stderr)
        return 1
    print(f"C-ECHO {called}@{args.host}:{port}: status 0x{status:04X}")
    return 0 if status == 0 else 1


def _cmd_models(args: argparse.Namespace) -> int:
    from worker.core.registry import all_specs, off_reason
    from worker.ops.cards import cards_markdown, spec_json

    specs = all_specs()
    if args.cards_markdown:
        print(cards_markdown(specs), end="")
    elif args.json:
        print(json.dumps([spec_json(spec) for spec in specs], indent=2))
    else:
        for spec in specs:
            status = spec.card.validation if spec.card else "no card"
            off = " [OFF: research only, MEDSEG_RESEARCH_MODELS turns it on]" * bool(
                off_reason(spec)
            )
            print(
                f"{spec.name:24} {spec.version:8} queue={spec.queue:4} {status:15} "
                f"{spec.description}{off}"
            )
        print(_batching_note(specs))
        note = _reduced_precision_note()
        if note:
            print(f"inference: {note}")
    return 0


def _batching_note(specs: Sequence[ModelSpec]) -> str:
    """How the workers batch the jobs of single-frame models (worker.runtime.batch_jobs),
    from the settings alone (the device is not probed: the listing never imports torch)."""
    from worker.core.settings import get_settings
    from worker.pipeline.batching import CUDA_BATCH_MAX

    settings = get_settings()
    names = ", ".join(spec.name for spec in specs if spec.batch_series) or "none"
    wait = f"waiting up to {settings.batch_wait_ms:g} ms for them"
    if settings.batch_max is None:
        how = f"{CUDA_BATCH_MAX} jobs per forward pass on CUDA, off on CPU, {wait}"
    elif settings.batch_max == 1:
        how = "off (MEDSEG_BATCH_MAX=1)"
    else:
        how = f"up to {settings.batch_max} jobs per forward pass (MEDSEG_BATCH_MAX), {wait}"
    return f"batching across series: {how}; models: {names}"


def _reduced_precision_note() -> str | None:
    """Where MEDSEG_INFERENCE_PRECISION asks for reduced precision and PyTorch is installed:
    the precision this machine's workers would run in (fp32 where the device has no units
    for the one asked for). None otherwise, so the default listing never imports torch."""
    import importlib.util

    from worker.core.settings import get_settings

    settings = get_settings()
    if settings.inference_precision == "fp32" or importlib.util.find_spec("torch") is None:
        return None
    from worker.pipeline.device import resolve_device
    from worker.pipeline.precision import precision_note, unsupported

    device = resolve_device(settings.device)
    requested = settings.inference_precision
    used = "fp32" if unsupported(device, requested) else requested
    return precision_note(device, requested, used)


def _format_measurements(values: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in values.items())


def _batch_progress() -> Callable[[int, int], None] | None:
    """A progress bar on stderr when it is a terminal (never mixed into --json on stdout), in
    steps: three per series (decoded, model run, exported), so one long series moves too."""
    if not sys.stderr.isatty():
        return None
    from worker.cli.models import _progress

    return lambda done, total: _progress("steps", done, total)


def _cmd_process(args: argparse.Namespace) -> int:
    from worker.core.card import describe_validation
    from worker.core.settings import get_settings
    from worker.pipeline.batch import process_paths
    from worker.pipeline.cache import ModelCache
    from worker.pipeline.device import resolve_device

    settings = get_settings()
    models = ModelCache(resolve_device(settings.device), settings.inference_precision, settle=True)
    try:
        rows, skipped = process_paths(args.paths, args.out, models, progress=_batch_progress())
    except FileNotFoundError as exc:
        print(f"medseg process: {exc}", file=sys.stderr)
        return 2
    for path, reason in skipped:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps([row.as_json() for row in rows], indent=2))
    else:
        print(f"{'series':<20} {'modality':<8} {'model':<20} {'status':<12} measurements / error")
        for row in rows:
            finished = row.status in FINISHED_WITH_RESULT
            detail = _format_measurements(row.measurements) if finished else row.error
            print(
                f"{row.series_uid[-20:]:<20} {row.modality:<8} {row.model or '-':<20} "
                f"{row.status:<12} {detail}"
            )
            if row.validation is not None:
                print(f"{'':<20} validation: {describe_validation(row.validation)}")
            for reason in row.review:
                print(f"{'':<20} needs review: {reason}")
            for finding in row.findings:
                status = finding.get("validation") or row.validation
                box = ", ".join(f"{v:g}" for v in finding["box_px"])
                print(
                    f"{'':<20} finding: {finding['label']} {finding['score']:.2f} at [{box}] px, "
                    f"{describe_validation(status)}"
                )
            for output in row.outputs:
                print(f"{'':<20} -> {output}")
    if not rows:
        print("medseg process: no DICOM series found", file=sys.stderr)
        return 1
    return 1 if any(row.status == "failed" for row in rows) else 0


def _cmd_show(args: argparse.Namespace) -> int:
    from db.session import make_engine, make_session_factory
    from worker.core.settings import get_settings
    from worker.export.report import print_study
    from worker.ops.history import print_history
    from worker.ops.lookup import find_studies

    engine = make_engine(get_settings().database_url)
    try:
        factory = make_session_factory(engine)
        matches = find_studies(factory, args.key)
        for match in matches:
            if len(matches) > 1:
                print(f"# {args.key} is the {match.how} of study {match.study_id}:")
            print_study(factory, match.study_id, sys.stdout)
            print_history(factory, match.study_id, sys.stdout)
    finally:
        engine.dispose()
    if not matches:
        print(
            f"medseg show: nothing found for {args.key!r} "
            "(give a study UID, series UID, accession number or job ID)",
            file=sys.stderr,
        )
        return 1
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from worker.devtools.demo import run_demo

    return run_demo(args.dir, series=args.series, timeout=args.timeout)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medseg", description=__doc__)
    parser.add_argument(
        "--log-level",
        help="DEBUG, INFO, WARNING, ERROR (default: INFO for services, WARNING for the rest)",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log the steps to stderr (INFO; -vv DEBUG)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("gateway", help="run the DICOM C-STORE/C-ECHO receiver").set_defaults(
        func=_cmd_gateway
    )

    worker = sub.add_parser("worker", help="run a Celery worker")
    worker.add_argument("--queues", default="gpu,cpu", help="comma-separated queues to consume")
    worker.add_argument("--concurrency", type=int, default=0, help="processes (default: CPUs)")
    worker.add_argument("--name", default="medseg@%h", help="Celery node name")
    worker.add_argument(
        "--metrics-port", type=int, help="Prometheus /metrics port (MEDSEG_WORKER_METRICS_PORT)"
    )
    worker.set_defaults(func=_cmd_worker)

    db = sub.add_parser("db", help="database migrations")
    db.add_argument("action", choices=["upgrade", "current"])
    db.add_argument("revision", nargs="?", default="head")
    db.set_defaults(func=_cmd_db)

    pre = sub.add_parser("prestart", help="wait for the database and broker, then migrate")
    pre.add_argument("--timeout", type=float, default=120.0, help="seconds to wait per service")
    pre.add_argument("--no-migrate", action="store_true", help="only wait, do not migrate")
    pre.set_defaults(func=_cmd_prestart)

    echo = sub.add_parser("echo", help="C-ECHO a DICOM node (default: this gateway)")
    echo.add_argument("--host", default="127.0.0.1")
    echo.add_argument("--port", type=int, default=0, help="default: MEDSEG_PORT")
    echo.add_argument("--aec", default="", help="called AE title (default: MEDSEG_AE_TITLE)")
    echo.add_argument("--aet", default="MEDSEG-ECHO", help="our calling AE title")
    echo.add_argument("--timeout", type=float, default=10.0)
    echo.set_defaults(func=_cmd_echo)

    models = sub.add_parser("models", help="list registered models and their cards")
    models.add_argument("--json", action="store_true", help="with each model's card, as JSON")
    models.add_argument(
        "--cards-markdown", action="store_true", help="the cards as docs/model-cards.md"
    )
    models.set_defaults(func=_cmd_models)

    process = sub.add_parser("process", help="run the pipeline on files/folders, no gateway")
    process.add_argument("paths", nargs="+", type=Path)
    process.add_argument("--out", type=Path, required=True, help="folder for SEG outputs")
    process.add_argument("--json", action="store_true", help="print one JSON object per series")
    process.set_defaults(func=_cmd_process)

    show = sub.add_parser(
        "show",
        help="a study's series, jobs, results and deliveries",
        description="Everything about a study: series, jobs, measurements, outputs, "
        "deliveries. Name it by any of its identifiers.",
    )
    show.add_argument(
        "key",
        metavar="STUDY",
        help="a Study or Series Instance UID, an accession number or a job ID",
    )
    show.set_defaults(func=_cmd_show)

    add_model_commands(sub)
    add_ops_commands(sub)
    add_studies_commands(sub)
    add_delivery_commands(sub)
    add_audit_commands(sub)
    add_dashboard_commands(sub)
    add_users_commands(sub)

    demo = sub.add_parser("demo", help="gateway + worker + broker end to end on sample studies")
    demo.add_argument("--dir", type=Path, default=Path("demo-data"))
    demo.add_argument(
        "--series", type=int, default=2, help="sample studies of each kind (chest CT, fetal US)"
    )
    demo.add_argument("--timeout", type=float, default=180.0)
    demo.set_defaults(func=_cmd_demo)
    return parser


#: Commands that run as services: they log their work at INFO unless told otherwise. Every
#: other command logs to stderr at WARNING (its answer is on stdout) unless -v or --log-level.
SERVICES = frozenset({"gateway", "worker", "dashboard", "flower", "demo", "prestart"})
#: The exit code of a command whose reader went away (``medseg status | head``), as a shell
#: reports a process ended by SIGPIPE.
EXIT_BROKEN_PIPE = 141


def log_level(args: argparse.Namespace) -> str:
    """--log-level if given, else -v (INFO) / -vv (DEBUG), else INFO for services and
    WARNING for the rest."""
    if args.log_level:
        return str(args.log_level).upper()
    if args.verbose:
        return "DEBUG" if args.verbose > 1 else "INFO"
    return "INFO" if args.command in SERVICES else "WARNING"


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 done, 1 the action failed or ``status`` found problems, 2 a usage
    error, 3 not allowed (roles), 130 Ctrl-C, 141 the output's reader went away."""
    args = build_parser().parse_args(argv)
    args.log_level = log_level(args)
    configure_logging(args.log_level)
    try:
        return _run(args)
    except BrokenPipeError:
        # The reader (head, less) is gone: no message, and no second error when Python
        # flushes stdout at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE


def _run(args: argparse.Namespace) -> int:
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:  # Ctrl-C, e.g. to end `status --watch`
        return 130
    except BrokenPipeError:
        raise
    except Exception as exc:
        message = one_line(exc)
        if message is None:
            raise
        print(f"medseg {args.command}: {message}", file=sys.stderr)
        return 1
    return result


if __name__ == "__main__":
    sys.exit(main())
