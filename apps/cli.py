"""The `almere` command: run the stack or one service, migrate a service's tables, issue tokens, play the
demo, and run, compare and benchmark the SUMO digital twin."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading
import time
from importlib import import_module
from pathlib import Path

from services.common.auth import issue_token, parse_duration, revoke_token
from services.common.config import Settings
from services.common.runtime import ServiceSpec, migrate, serve

SERVICE_MODULES = {
    "parking": "services.parking.service",
    "incidents": "services.incidents.service",
    "signals": "services.signals.service",
    "optimizer": "services.optimizer.service",
    "whatif": "services.whatif.service",
    "partners": "services.partners.service",
    "counters": "services.counters.service",
}
WORKERS = ("whatif-worker",)  # `almere serve` runs them too: processes without a port


def _spec(name: str) -> ServiceSpec:
    spec: ServiceSpec = import_module(SERVICE_MODULES[name]).SPEC
    return spec


def cmd_up(args: argparse.Namespace) -> int:
    from apps.stack import DEFAULT_CALLERS, Stack, dev_callers
    from apps.supervision import Supervisor

    # Our own handlers: a shell's background job (or nohup) starts with SIGINT ignored, and the
    # default SIGTERM would leave the services running without us.
    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    stack = Stack(
        settings=Settings(), callers=dev_callers(*(args.caller or DEFAULT_CALLERS)), nats_nodes=args.nats_cluster
    )
    try:
        stack.start()
        print(stack.describe(), flush=True)
        supervisor = Supervisor(stack=stack)
        while not stopping.wait(0.5):
            for event in supervisor.tick(time.monotonic()):
                print(event, file=sys.stderr, flush=True)
        print("\nstopping...", flush=True)
        return 0
    finally:
        stack.stop()


def _dev_caller(text: str) -> str:
    from apps.stack import dev_callers

    try:
        dev_callers(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def cmd_serve(args: argparse.Namespace) -> int:
    if args.service == "gateway":  # HTTP, not a gRPC service with tables of its own
        from services.gateway.service import serve as serve_gateway

        serve_gateway(Settings())
        return 0
    if args.service == "whatif-worker":
        from apps.whatif_worker import run_worker

        return run_worker(Settings())
    serve(_spec(args.service), Settings())
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    migrate(_spec(args.service), Settings())
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    path = Path(args.file or Settings().tokens_file or "data/tokens.json")
    if args.action == "revoke":
        if not revoke_token(path, args.caller):
            print(f"error: no caller {args.caller} in {path}", file=sys.stderr)
            return 1
        print(f"# {args.caller} removed from {path}; services refuse its token within seconds.", file=sys.stderr)
        return 0
    try:
        expires_in = parse_duration(args.expires_in) if args.expires_in else None
        token = issue_token(path, args.caller, args.role, expires_in=expires_in)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(token)
    until = f", valid for {args.expires_in}" if expires_in else ""
    print(f"# {args.caller} ({args.role}) added to {path}{until}; the token is shown only now.", file=sys.stderr)
    return 0


def cmd_roles(args: argparse.Namespace) -> int:
    from apps import partner_reads, role_table

    print(role_table.table(), partner_reads.table(), sep="\n", end="")
    return 0


def cmd_bus_permissions(args: argparse.Namespace) -> int:
    """What the Helm chart renders into nats-server's configuration (deploy/helm/.../files/)."""
    import json

    from contract.bus_access import USERS

    users = {name: {"inbox_prefix": u.inbox_prefix, "permissions": u.permissions()} for name, u in USERS.items()}
    print(json.dumps(users, indent=2))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from apps.demo import run_demo

    keep = sys.stdin.isatty() if args.keep is None else args.keep
    return run_demo(Settings(), full=args.full, keep=keep)


def cmd_screenshot(args: argparse.Namespace) -> int:
    from apps.screenshot import take

    # The token from a credentials file, never from the command line (ps and shell history show those).
    token = json.loads(args.credentials.read_text())[args.caller]["token"]
    print(asyncio.run(take(url=args.url, token=token, out=args.out, settle_s=args.settle)))
    return 0


def cmd_sim_run(args: argparse.Namespace) -> int:
    from apps.coupled import run_modes, run_with_stack
    from sim.report import write
    from sim.runner import RunSpec, run_many
    from sim.scenarios.registry import resolve

    specs = [
        RunSpec(
            scenario=args.scenario,
            mode=mode,
            seed=seed,
            out_root=args.out,
            end_s=args.end,
            scale=args.scale,
            equipped=args.equipped,
            gui=args.gui,
            clock=args.clock,
            pace=args.pace,
            priority=not args.no_priority,
            adaptive_signals=not args.no_adaptive_signals,
        )
        for mode in args.mode
        for seed in range(args.seed, args.seed + args.seeds)
    ]
    if args.services_dir:
        from dataclasses import replace

        runs = run_many([replace(s, services_dir=args.services_dir) for s in specs])
    else:
        # The optimizer is one of the services: coordinating needs them running.
        runs = run_with_stack(specs) if args.services else run_modes(specs)
    for run_dir in runs:
        print(run_dir)
    print(f"report: {write(runs, args.out / resolve(args.scenario).name / 'report')}")
    return 0


def cmd_sim_byo(args: argparse.Namespace) -> int:
    from sim.scenarios import byo

    scenario = byo.build(
        args.source, args.out, facilities=args.facilities, trips=args.trips, horizon_s=args.end, seed=args.seed
    )
    byo.run_sumo(scenario, args.out / "tripinfo.xml")
    print(f"{scenario.config}: {scenario.trips} trips, parking {', '.join(scenario.facilities)}")
    print(f"tripinfo in {args.out / 'tripinfo.xml'}")
    return 0


def cmd_sim_resco(args: argparse.Namespace) -> int:
    from sim.scenarios import resco

    network = resco.locate(args.name)
    for seed in range(1, args.seeds + 1):
        result = resco.run_fixed_time(network, args.out, seed=seed)
        print(
            f"{args.name} seed {seed}: fixed-time delay {result['delay_s']:.1f} s, trip time "
            f"{result['trip_time_s']:.1f} s, waiting {result['waiting_time_s']:.1f} s "
            f"({result['vehicles_departed']}/{result['vehicles_scheduled']} vehicles departed)"
        )
    return 0


def cmd_sim_report(args: argparse.Namespace) -> int:
    from sim.report import write

    print(write(args.runs, args.out))
    return 0


def _add_sim(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from apps import signal_bench
    from sim.runner import MODES
    from sim.scenarios import registry

    def scenario(name: str) -> str:
        try:
            registry.resolve(name)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return name

    sim = sub.add_parser("sim", help="the SUMO digital twin").add_subparsers(dest="action", required=True)
    run = sim.add_parser("run", help="run a scenario in one or more modes and seeds, then write a report")
    run.add_argument("scenario", type=scenario, help=f"one of {registry.FORMS}")
    run.add_argument("--mode", choices=MODES, action="append", help="repeat for several (default: none)")
    run.add_argument("--seed", type=int, default=1, help="first seed")
    run.add_argument("--seeds", type=int, default=1, help="how many seeds from --seed")
    run.add_argument("--end", type=float, default=4 * 3600, help="simulated seconds (default 4 h: 07:00-11:00)")
    run.add_argument("--scale", type=float, default=0.7, help="demand scale (default 0.7)")
    run.add_argument("--equipped", type=float, default=0.5, help="share of vehicles with route guidance")
    run.add_argument("--gui", action="store_true", help="watch it in sumo-gui (TraCI, one run at a time)")
    run.add_argument("--clock", choices=["lockstep", "realtime"], default="lockstep")
    run.add_argument(
        "--pace", type=float, default=1.0, help="realtime clock: simulated seconds per wall second (default 1)"
    )
    run.add_argument(
        "--services-dir", type=Path, help="use running services: a folder with endpoints.json and credentials.json"
    )
    run.add_argument("--services", action="store_true", help="start the stack; garage counters and police report to it")
    run.add_argument(
        "--no-priority",
        action="store_true",
        help="responders do not ask for signal priority (to measure what it gives)",
    )
    run.add_argument(
        "--no-adaptive-signals",
        action="store_true",
        help="coordinated mode with SUMO's actuated lights instead of the optimizer's adaptive steps",
    )
    run.add_argument("--out", type=Path, default=Path("data/sim"))
    run.set_defaults(func=cmd_sim_run)
    byo = sim.add_parser("byo", help="your own network (.osm or .net.xml) with parking and demand, run in SUMO")
    byo.add_argument("source", type=Path)
    byo.add_argument("--out", type=Path, default=Path("data/sim/byo"))
    byo.add_argument("--facilities", type=int, default=4)
    byo.add_argument("--trips", type=int, default=300)
    byo.add_argument("--end", type=float, default=1800)
    byo.add_argument("--seed", type=int, default=1)
    byo.set_defaults(func=cmd_sim_byo)
    rs = sim.add_parser("resco", help="a RESCO benchmark network (from sumo-rl) with its fixed-time programs")
    rs.add_argument("name", help="cologne1, cologne3, cologne8, ingolstadt1, ingolstadt7, ingolstadt21, grid4x4, ...")
    rs.add_argument("--seeds", type=int, default=1)
    rs.add_argument("--out", type=Path, default=Path("data/sim/resco"))
    rs.set_defaults(func=cmd_sim_resco)
    report = sim.add_parser("report", help="compare runs: table and plots")
    report.add_argument("runs", type=Path, nargs="+", help="run folders (data/sim/<scenario>/<mode>-seed<n>)")
    report.add_argument("--out", type=Path, default=Path("data/sim/report"))
    report.set_defaults(func=cmd_sim_report)
    signal_bench.add_parser(sim)


# The commands that run services and keep their data.
PRIVATE_COMMANDS = frozenset({"up", "serve", "migrate", "demo"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="almere", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    from apps.stack import DEFAULT_CALLERS, DEV_CALLERS

    up = sub.add_parser("up", help="start NATS and every service on this machine")
    up.add_argument(
        "--caller",
        action="append",
        type=_dev_caller,
        help=f"a development caller to issue a token for (repeat): {', '.join(DEV_CALLERS)}, or <name>=<role> "
        f"(default: {', '.join(DEFAULT_CALLERS)})",
    )
    up.add_argument(
        "--nats-cluster",
        type=int,
        default=1,
        metavar="NODES",
        help="run NATS as a JetStream cluster of this many nodes (3 survives losing one), every stream with "
        "as many replicas (default 1: one nats-server)",
    )
    up.set_defaults(func=cmd_up)
    p = sub.add_parser("serve", help="run one service (what a Kubernetes pod runs)")
    p.add_argument("service", choices=sorted([*SERVICE_MODULES, "gateway", *WORKERS]))
    p.set_defaults(func=cmd_serve)
    p = sub.add_parser("migrate", help="create or upgrade one service's tables")
    p.add_argument("service", choices=sorted(SERVICE_MODULES))
    p.set_defaults(func=cmd_migrate)
    p = sub.add_parser("token", help="issue or revoke a caller token")
    tsub = p.add_subparsers(dest="action", required=True)
    issue = tsub.add_parser("issue", help="add a caller to the tokens file and print its token")
    issue.add_argument("--caller", required=True, help="who calls, e.g. garage-centrum-counter")
    issue.add_argument("--role", required=True, help="engineer, operator:<id>, police, fire, ems, optimizer, sim")
    issue.add_argument("--file", type=Path, help="tokens file (default $ALMERE_TOKENS_FILE or data/tokens.json)")
    issue.add_argument("--expires-in", help="refuse the token after this long: 30d, 12h, 15m, 90s (default never)")
    issue.set_defaults(func=cmd_token)
    revoke = tsub.add_parser("revoke", help="remove a caller from the tokens file (running services reload it)")
    revoke.add_argument("--caller", required=True, help="the caller whose token is refused from now on")
    revoke.add_argument("--file", type=Path, help="tokens file (default $ALMERE_TOKENS_FILE or data/tokens.json)")
    revoke.set_defaults(func=cmd_token)
    sub.add_parser(
        "roles", help="print the table of which roles may call each RPC (docs/roles.md: almere roles > docs/roles.md)"
    ).set_defaults(func=cmd_roles)
    demo = sub.add_parser(
        "demo",
        help="start the stack and play five scenes: a garage filling up, a collision reported, signal timing, "
        "the twin's incident + event morning in three modes, and response plans to the collision simulated "
        "forward (what-if), the best adopted (transcript in data/demo/demo.txt)",
    )
    demo.add_argument(
        "--full",
        action="store_true",
        help="the twin's table over three seeds and four simulated hours (default: one seed, three hours)",
    )
    demo.add_argument(
        "--keep",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="afterwards leave the dashboard showing the coordinated run until Ctrl-C (default: when run "
        "from a terminal)",
    )
    demo.set_defaults(func=cmd_demo)
    shot = sub.add_parser("screenshot", help="a PNG of the dashboard as a token's role sees it (Debian's chromium)")
    shot.add_argument("--url", default="http://127.0.0.1:8080/dashboard/")
    shot.add_argument("--credentials", type=Path, default=Path("data/credentials.json"), help="as almere up writes it")
    shot.add_argument("--caller", default="engineer", help="whose token in the credentials file")
    shot.add_argument("--out", type=Path, default=Path("data/screenshots/dashboard.png"))
    shot.add_argument("--settle", type=float, default=5.0, help="seconds for live data to arrive before the shot")
    shot.set_defaults(func=cmd_screenshot)
    bus = sub.add_parser("bus", help="the NATS bus's users").add_subparsers(dest="action", required=True)
    bus.add_parser("permissions", help="every bus user's subject permissions (JSON)").set_defaults(
        func=cmd_bus_permissions
    )
    _add_sim(sub)
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is cmd_sim_run and not args.mode:
        args.mode = ["none"]
    if args.command in PRIVATE_COMMANDS:
        # What these write (databases, logs, tokens, the bus's store) is for this user's eyes only.
        os.umask(0o077)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
