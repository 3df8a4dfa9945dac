"""The `almere` command: run the stack, one service, the demo, or issue tokens."""

from __future__ import annotations

import argparse
import sys
import time
from importlib import import_module
from pathlib import Path

from services.common.auth import issue_token
from services.common.config import Settings
from services.common.runtime import ServiceSpec, migrate, serve

SERVICE_MODULES = {"parking": "services.parking", "incidents": "services.incidents", "signals": "services.signals"}


def _spec(name: str) -> ServiceSpec:
    spec: ServiceSpec = import_module(SERVICE_MODULES[name]).SPEC
    return spec


def cmd_up(args: argparse.Namespace) -> int:
    from services.stack import Stack

    stack = Stack(Settings())
    stack.start()
    print(stack.describe(), flush=True)
    try:
        while (dead := stack.check_alive()) is None:
            time.sleep(0.5)
        print(f"service {dead} exited; see {stack.data_dir / (dead + '.log')}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        stack.stop()


def cmd_serve(args: argparse.Namespace) -> int:
    serve(_spec(args.service), Settings())
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    migrate(_spec(args.service), Settings())
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    path = args.file or Settings().tokens_file or Path("data/tokens.json")
    try:
        token = issue_token(Path(path), args.caller, args.role)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(token)
    print(f"# {args.caller} ({args.role}) added to {path}; the token is shown only now.", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from services.demo import run_demo

    return run_demo(Settings())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="almere", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="start NATS and every service on this machine").set_defaults(func=cmd_up)
    p = sub.add_parser("serve", help="run one service (what a Kubernetes pod runs)")
    p.add_argument("service", choices=sorted(SERVICE_MODULES))
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("migrate", help="create or upgrade one service's tables")
    p.add_argument("service", choices=sorted(SERVICE_MODULES))
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("token", help="issue a caller token")
    tsub = p.add_subparsers(dest="action", required=True)
    issue = tsub.add_parser("issue", help="add a caller to the tokens file and print its token")
    issue.add_argument("--caller", required=True, help="who calls, e.g. garage-centrum-counter")
    issue.add_argument("--role", required=True, help="engineer, operator:<id>, police, fire, ems, optimizer, sim")
    issue.add_argument("--file", type=Path, help="tokens file (default $ALMERE_TOKENS_FILE or data/tokens.json)")
    issue.set_defaults(func=cmd_token)
    sub.add_parser("demo", help="start the stack and play a garage filling up").set_defaults(func=cmd_demo)
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
