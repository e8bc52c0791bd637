"""``medseg audit``: what operators did (retry, cancel, rerun, review, re-deliver), who, when
and from where; and who the CLI's operator is (``--user``, MEDSEG_OPERATOR, the OS user)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from worker.ops.audit import ACTIONS, Actor

#: The exit status of a CLI action the acting user's role does not allow.
NOT_ALLOWED = 3


def add_user_option(parser: argparse.ArgumentParser) -> None:
    """``--user NAME``: who acts, for the audit trail."""
    parser.add_argument(
        "--user",
        metavar="NAME",
        help="who acts, for the audit trail (default: MEDSEG_OPERATOR, else the OS user)",
    )


def operator(args: argparse.Namespace) -> Actor:
    """The CLI's actor: ``--user``, else MEDSEG_OPERATOR, else the OS login name."""
    name = getattr(args, "user", None) or os.environ.get("MEDSEG_OPERATOR", "").strip()
    if not name:
        try:
            name = getpass.getuser()
        except (KeyError, OSError):  # no login name (a container without a passwd entry)
            name = f"uid {os.getuid()}"
    return Actor(name, "cli")


def permitted(
    args: argparse.Namespace,
    action: str,
    *,
    actor: Actor | None = None,
    job_id: int | None = None,
    delivery_id: int | None = None,
    study_id: int | None = None,
) -> bool:
    """Whether the acting user may ``action`` (worker.ops.people.authorize_cli); a refusal
    is printed and recorded in the audit trail."""
    from worker.cli.ops import _session_factory
    from worker.core.settings import get_settings
    from worker.ops.people import NotAllowedError, authorize_cli

    try:
        authorize_cli(
            _session_factory(),
            actor or operator(args),
            action,
            require_account=get_settings().cli_require_account,
            job_id=job_id,
            delivery_id=delivery_id,
            study_id=study_id,
        )
    except NotAllowedError as exc:
        print(f"medseg {args.command}: not allowed: {exc}", file=sys.stderr)
        return False
    return True


def _cmd_audit(args: argparse.Namespace) -> int:
    from worker.cli.ops import _session_factory
    from worker.ops.audit import list_events
    from worker.ops.history import event_text

    events = list_events(
        _session_factory(),
        since=args.since,
        user=args.user,
        action=args.action,
        job_ids=[args.job] if args.job is not None else None,
        study_id=args.study,
        limit=args.limit,
    )
    for event in events:
        job = f"job {event.job_id}" if event.job_id else "-"
        study = f"study {event.study_id}" if event.study_id else ""
        print(f"{event.id:>6}  {job:<10} {study:<12} {event_text(event)}")
    if not events:
        print("no operator actions recorded" + (" matching" if _filtered(args) else ""))
    return 0


def _filtered(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.since, args.user, args.action, args.job, args.study))


def add_audit_commands(sub: Any) -> None:
    from worker.cli.ops import _since

    audit = sub.add_parser(
        "audit",
        help="what operators did: who retried, cancelled, reran, reviewed, re-sent what, when",
        description="The audit trail, newest first. Each row: id, job, study, time (UTC), "
        "who (from the dashboard or the CLI), action, target, outcome and detail.",
    )
    audit.add_argument("--since", type=_since, help="only since, e.g. 30m, 2h, 7d")
    audit.add_argument("--user", metavar="NAME", help="only this operator's actions")
    audit.add_argument("--action", choices=ACTIONS, help="only this action")
    audit.add_argument("--job", type=int, metavar="JOB_ID", help="only actions on this job")
    audit.add_argument(
        "--study", type=int, metavar="STUDY_ID", help="only actions on this study's jobs"
    )
    audit.add_argument("--limit", type=int, default=200, help="rows, newest first (default 200)")
    audit.set_defaults(func=_cmd_audit)
