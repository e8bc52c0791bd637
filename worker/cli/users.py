"""``medseg users add|passwd|disable|enable|role|list``: the named accounts of the dashboard
(worker.ops.people). Passwords are asked at the terminal, or read as one line from stdin;
never taken from the command line. Managing accounts is the ``admin`` role's: the acting user
(``--user``, MEDSEG_OPERATOR, the OS user) is checked like every CLI action."""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any

from worker.cli.audit import NOT_ALLOWED, add_user_option, permitted


def _password(command: str) -> str | None:
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print(f"medseg users {command}: the passwords differ", file=sys.stderr)
            return None
        return password
    return sys.stdin.readline().rstrip("\r\n")


def _cmd_users(args: argparse.Namespace) -> int:
    from worker.cli.ops import _session_factory
    from worker.ops import people

    factory = _session_factory()
    if args.users_action == "list":
        return _list(factory)
    if not permitted(args, "users"):
        return NOT_ALLOWED
    try:
        if args.users_action == "add":
            password = _password("add")
            if password is None:
                return 1
            account = people.add(factory, args.name, people.as_role(args.role), password)
            print(f"{account.name} added as {account.role}")
        elif args.users_action == "passwd":
            password = _password("passwd")
            if password is None:
                return 1
            people.set_password(factory, args.name, password)
            print(f"{args.name}: password changed")
        elif args.users_action == "role":
            account = people.set_role(factory, args.name, people.as_role(args.role))
            print(f"{account.name} is now {account.role}")
        elif args.users_action == "disable":
            people.disable(factory, args.name)
            print(f"{args.name} disabled: no new logins, open sessions end at their next page")
        else:
            people.enable(factory, args.name)
            print(f"{args.name} enabled")
    except people.AccountError as exc:
        print(f"medseg users {args.users_action}: {exc}", file=sys.stderr)
        return 1
    return 0


def _list(factory: Any) -> int:
    from worker.ops.people import list_accounts

    accounts = list_accounts(factory)
    print(f"{'name':<24} {'role':<9} {'origin':<7} {'state':<9} last login (UTC)")
    for a in accounts:
        state = "disabled" if a.disabled_at else "enabled"
        last = a.last_login_at.strftime("%Y-%m-%d %H:%M") if a.last_login_at else "-"
        print(f"{a.name:<24} {a.role:<9} {a.origin:<7} {state:<9} {last}")
    if not accounts:
        print("no accounts (the bootstrap admin MEDSEG_DASHBOARD_USER is not listed)")
    return 0


def add_users_commands(sub: Any) -> None:
    from worker.ops.people import ROLES

    users = sub.add_parser(
        "users",
        help="named dashboard accounts and their roles (viewer, operator, reviewer, admin)",
        description="Accounts of the dashboard. Roles: viewer reads; operator retries, "
        "cancels, re-runs and re-sends; reviewer accepts and rejects results; admin does all "
        "and manages accounts. Passwords are asked, or read as one line from stdin.",
    )
    actions = users.add_subparsers(dest="users_action", required=True)
    add = actions.add_parser("add", help="a new local account (password asked or on stdin)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=ROLES)
    passwd = actions.add_parser("passwd", help="set a local account's password")
    passwd.add_argument("name")
    role = actions.add_parser("role", help="change an account's role")
    role.add_argument("name")
    role.add_argument("--role", required=True, choices=ROLES)
    disable = actions.add_parser("disable", help="no more logins (accounts are never deleted)")
    disable.add_argument("name")
    enable = actions.add_parser("enable", help="allow a disabled account again")
    enable.add_argument("name")
    actions.add_parser("list", help="every account, its role and state")
    for parser in (add, passwd, role, disable, enable):
        add_user_option(parser)
    users.set_defaults(func=_cmd_users)
