"""``medseg export-training`` (reviewed results as training data), ``medseg shadow``
(install a model version in shadow, list installs), ``medseg compare`` (live vs shadow) and
``medseg promote`` (a shadow version made live, audited)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from worker.cli import ops
from worker.cli.audit import NOT_ALLOWED, add_user_option, operator, permitted


def _date(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("a date as YYYY-MM-DD") from exc


def _cmd_export(args: argparse.Namespace) -> int:
    from worker.core.settings import get_settings
    from worker.corrections.reference import install
    from worker.trainset.export import ExportError, export_training

    install()  # corrected results are exported with the reviewer's correction
    secret = get_settings().training_export_secret
    if not secret:
        print(
            "medseg export-training: set MEDSEG_TRAINING_EXPORT_SECRET (the site secret the "
            "subject keys are made with; keep it, or keys change between exports)",
            file=sys.stderr,
        )
        return 2
    decisions = [d.strip() for d in args.decision.split(",") if d.strip()]
    try:
        summary = export_training(
            ops._session_factory(),
            args.model,
            args.out,
            secret=secret,
            decisions=decisions,
            since=args.since,
        )
    except (ExportError, ValueError) as exc:
        print(f"medseg export-training: {exc}", file=sys.stderr)
        return 2
    print(
        f"{summary.written} case(s) of {summary.model} from {len(summary.subjects)} subject(s) "
        f"in the {summary.layout} layout: {summary.out}"
    )
    for reason, count in sorted(summary.skipped.items()):
        print(f"skipped {count}: {reason}")
    return 0


def _cmd_shadow(args: argparse.Namespace) -> int:
    from worker.cli.output import table
    from worker.ops.operations import OperationError
    from worker.shadow.installs import install_shadow, installs

    if args.action == "list":
        table(
            ["model", "version", "role", "installed by", "weights sha256"],
            (
                (i.model, i.version, i.role, i.installed_by, i.weights_sha256[:12])
                for i in installs(ops._session_factory(), args.model)
            ),
        )
        return 0
    if not args.model or not args.version or not args.weights:
        print("medseg shadow install: give MODEL --version V --weights FILE", file=sys.stderr)
        return 2
    if not permitted(args, "shadow"):
        return NOT_ALLOWED
    try:
        done = install_shadow(
            ops._session_factory(),
            args.model,
            args.version,
            args.weights,
            actor=operator(args),
            note=args.note,
        )
    except OperationError as exc:
        print(f"medseg shadow: {exc}", file=sys.stderr)
        return 1
    print(f"{done.model} {done.version} installed in shadow ({done.weights_sha256[:12]}…)")
    print("workers run it beside the live version from their next job; nothing it makes is sent")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from worker.corrections.reference import install
    from worker.shadow.compare import compare, report_lines

    install()  # each version's error against reviewers' corrections too
    comparison = compare(ops._session_factory(), args.model, args.live, args.shadow)
    for line in report_lines(comparison):
        print(line)
    return 0


def _cmd_promote(args: argparse.Namespace) -> int:
    from worker.ops.operations import OperationError
    from worker.shadow.installs import promote

    if not permitted(args, "promote"):
        return NOT_ALLOWED
    try:
        done = promote(ops._session_factory(), args.model, args.version, actor=operator(args))
    except OperationError as exc:
        print(f"medseg promote: {exc}", file=sys.stderr)
        return 1
    print(f"{done.model} {done.version} is live; jobs that start from now run it")
    return 0


def add_learning_commands(sub: Any) -> None:
    export = sub.add_parser(
        "export-training",
        help="reviewed results of a model as a de-identified training set in its own layout",
        description="Accepted (and corrected) results of MODEL in the layout its training "
        "reads: HC18 for fetal-head-unet, NIfTI pairs for fetal-brain-unet, images/ + masks/ "
        "+ images.csv for lung-cxr. No names, IDs, dates or UIDs; subjects by a keyed hash "
        "of the Patient ID (MEDSEG_TRAINING_EXPORT_SECRET); manifest.json lists the cases.",
    )
    export.add_argument("model", metavar="MODEL")
    export.add_argument("--out", type=Path, required=True, help="a new or empty folder")
    export.add_argument("--since", type=_date, help="only results reviewed since YYYY-MM-DD")
    export.add_argument(
        "--decision", default="accepted,corrected", help="accepted,corrected (default both)"
    )
    export.set_defaults(func=_cmd_export)

    shadow = sub.add_parser(
        "shadow",
        help="install a model version in shadow (runs beside the live one, never delivered)",
        description="`medseg shadow install MODEL --version V --weights FILE`: workers run V "
        "on every series the live version runs on and store its results for `medseg "
        "compare`; none is delivered. `medseg shadow list`: the installed versions.",
    )
    shadow.add_argument("action", choices=["install", "list"])
    shadow.add_argument("model", nargs="?", metavar="MODEL")
    shadow.add_argument("--version", help="the new version's label")
    shadow.add_argument("--weights", type=Path, help="its checkpoint (.pt with its .json)")
    shadow.add_argument("--note", help="why (kept with the install)")
    add_user_option(shadow)
    shadow.set_defaults(func=_cmd_shadow)

    comp = sub.add_parser(
        "compare",
        help="live vs shadow version on the same series: Dice, Bland-Altman, flag rates",
    )
    comp.add_argument("model", metavar="MODEL")
    comp.add_argument("--live", required=True, metavar="V1")
    comp.add_argument("--shadow", required=True, metavar="V2")
    comp.set_defaults(func=_cmd_compare)

    prom = sub.add_parser(
        "promote", help="make an installed (shadow) version of a model live; audited"
    )
    prom.add_argument("model", metavar="MODEL")
    prom.add_argument("version", metavar="VERSION")
    add_user_option(prom)
    prom.set_defaults(func=_cmd_promote)
