"""``medseg dashboard`` (web dashboard, its password hash) and ``medseg flower``."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from worker.core.settings import get_settings
    from worker.dashboard.app import DashboardConfigError
    from worker.dashboard.serve import serve

    try:
        serve(get_settings(), args.host, args.port)
    except DashboardConfigError as exc:
        print(f"medseg dashboard: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_hash_password(args: argparse.Namespace) -> int:
    from worker.dashboard.auth import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("medseg dashboard hash-password: the passwords differ", file=sys.stderr)
            return 1
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        print("medseg dashboard hash-password: use 8 characters or more", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


def _cmd_flower(args: argparse.Namespace) -> int:
    from worker.runtime.celery_app import app

    # Flower registers itself as a celery sub-command; our app carries the broker settings.
    app.start(["flower", f"--address={args.address}", f"--port={args.port}", *args.extra])
    return 0


def add_dashboard_commands(sub: Any) -> None:
    dashboard = sub.add_parser(
        "dashboard", help="the operators' web dashboard (needs MEDSEG_DASHBOARD_PASSWORD_HASH)"
    )
    dashboard.add_argument("--host", help="default MEDSEG_DASHBOARD_HOST")
    dashboard.add_argument("--port", type=int, help="default MEDSEG_DASHBOARD_PORT")
    dashboard.set_defaults(func=_cmd_dashboard)
    actions = dashboard.add_subparsers(dest="dashboard_action")
    hashing = actions.add_parser(
        "hash-password",
        help="print the MEDSEG_DASHBOARD_PASSWORD_HASH for a password (asked, or one stdin line)",
    )
    hashing.set_defaults(func=_cmd_hash_password)

    flower = sub.add_parser("flower", help="Flower (Celery monitor) against our broker and queues")
    flower.add_argument("--address", default="127.0.0.1")
    flower.add_argument("--port", type=int, default=5555)
    flower.add_argument(
        "extra", nargs=argparse.REMAINDER, help="more flower options, e.g. --basic-auth=u:p"
    )
    flower.set_defaults(func=_cmd_flower)
