"""Incident reported -> first vehicle rerouted in SUMO, in real time, on a quiet stack and with the
locust user mix (locustfile.py: garage counters, the control room, police, the optimizer's proposals)
running beside it, in the same run: p50/p99 of each, the ratio, and met / not met against p99 < 100 ms.

Each phase starts its own stack and twin (bench_optimizer.incident_latency: 25 police reports 4 s
apart on the road most equipped vehicles have ahead) and prints where the time goes, hop by hop.
Under load, locust (`--users`, default 150, all spawned before the first report) runs only while the
incidents are reported, bounded in time, on 127.0.0.1; its own per-call table follows.

Run: `.venv/bin/python loadtest/bench_reroute_under_load.py [--users 150] [--incidents 25]`."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from bench_optimizer import LATENCY_TARGET_MS, incident_latency
from run_loadtest import locust_command, locust_env, print_stats


@contextmanager
def locust_beside(stack_dir: Path, *, users: int, spawn_rate: float, bound_s: int, csv_prefix: Path) -> Iterator[None]:
    """incident_latency's `beside`: locust against the bench's stack, every user running before the
    first report; stopped when the measured part ends (by its own `-t` bound at the latest)."""
    command = locust_command(users=users, spawn_rate=spawn_rate, duration_s=bound_s, csv_prefix=csv_prefix)
    process = subprocess.Popen(command, env=locust_env(stack_dir))
    try:
        time.sleep(users / spawn_rate + 5)  # spawned, and past the first calls' connection set-up
        if process.poll() is not None:
            raise RuntimeError(f"locust ended early (exit code {process.returncode})")
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)  # locust stops its users and writes its CSV
        process.wait(60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=150, help="locust users beside the twin (default 150)")
    parser.add_argument("--spawn-rate", type=float, default=25)
    parser.add_argument("--incidents", type=int, default=25)
    parser.add_argument("--gap", type=float, default=4.0, help="simulated (= wall) seconds between incidents")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    import sumo  # noqa: F401  - SUMO_HOME before libsumo

    with tempfile.TemporaryDirectory() as tmp:
        print("== quiet: the stack and the twin alone ==")
        quiet = incident_latency(Path(tmp) / "quiet", args.incidents, args.gap)
        print(f"\n== under load: {args.users} locust users beside them ==")
        prefix = Path(tmp) / "locust"
        bound = int(args.incidents * args.gap + args.users / args.spawn_rate + 120)
        beside = partial(locust_beside, users=args.users, spawn_rate=args.spawn_rate, bound_s=bound, csv_prefix=prefix)
        loaded = incident_latency(Path(tmp) / "loaded", args.incidents, args.gap, beside=beside)
        print(f"\nlocust beside the twin ({args.users} users):")
        rows = print_stats(prefix)
    target = LATENCY_TARGET_MS
    print(f"\nincident reported -> first reroute in SUMO, target p99 < {target:.0f} ms")
    print(f"{'':<12} {'answered':>8} {'p50 ms':>8} {'p99 ms':>8}  target")
    for name, result in (("quiet", quiet), ("under load", loaded)):
        met = "met" if result["p99_ms"] < target else "NOT met"
        print(f"{name:<12} {result['answered']:>8} {result['p50_ms']:>8.1f} {result['p99_ms']:>8.1f}  {met}")
    ratios = {p: loaded[f"{p}_ms"] / quiet[f"{p}_ms"] for p in ("p50", "p99")}
    print(f"ratio under load / quiet: p50 {ratios['p50']:.2f}x, p99 {ratios['p99']:.2f}x")
    if args.json:
        load = {r["Name"]: {k: r[k] for k in ("Request Count", "Failure Count", "Requests/s", "99%")} for r in rows}
        args.json.write_text(json.dumps({"quiet": quiet, "loaded": loaded, "locust": load}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
