"""`make loadtest`: start the stack on loopback, run locust headless with the real user mix for a
bounded time and user count, and print RPS, p50/p95/p99 and failures per call."""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

from apps.stack import Stack, dev_callers
from services.common.config import Settings

HERE = Path(__file__).resolve().parent


def locust_command(*, users: int, spawn_rate: float, duration_s: int, csv_prefix: Path) -> list[str]:
    """locust headless with the user mix (locustfile.py), bounded in users and time, stats to CSV."""
    return [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(HERE / "locustfile.py"),
        "--headless",
        "-u",
        str(users),
        "-r",
        str(spawn_rate),
        "-t",
        f"{duration_s}s",
        "--stop-timeout",
        "5",
        "--csv",
        str(csv_prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]


def locust_env(stack_dir: Path) -> dict[str, str]:
    """The environment pointing locustfile.py at a running stack (its endpoints and credentials)."""
    return dict(os.environ, ALMERE_LOADTEST_DIR=str(stack_dir))


def print_stats(csv_prefix: Path) -> list[dict[str, str]]:
    """locust's per-call table (requests, failures, RPS, p50/p95/p99); returns its rows."""
    rows = list(csv.DictReader(csv_prefix.with_name(f"{csv_prefix.name}_stats.csv").open()))
    print(f"{'call':<22} {'requests':>8} {'fail':>5} {'rps':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    for row in rows:
        print(
            f"{row['Name']:<22} {row['Request Count']:>8} {row['Failure Count']:>5} {float(row['Requests/s']):>7.1f} "
            f"{row['50%']:>7} {row['95%']:>7} {row['99%']:>7}"
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--users", type=int, default=150, help="simulated users (default 150)")
    parser.add_argument("--spawn-rate", type=float, default=25)
    parser.add_argument("--duration", type=int, default=60, help="seconds of load (default 60)")
    parser.add_argument("--data-dir", type=Path, default=Path("data/loadtest"))
    args = parser.parse_args()
    run_dir = args.data_dir.resolve()
    shutil.rmtree(run_dir, ignore_errors=True)
    # The locust users' callers (locustfile.py).
    stack = Stack(
        settings=Settings(data_dir=run_dir, log_level="WARNING"),
        callers=dev_callers("engineer", "operator", "police", "optimizer"),
    )
    stack.start()
    prefix = run_dir / "locust"
    try:
        result = subprocess.run(
            locust_command(users=args.users, spawn_rate=args.spawn_rate, duration_s=args.duration, csv_prefix=prefix),
            env=locust_env(run_dir),
            timeout=args.duration + 120,
            check=False,
        )
    finally:
        stack.stop()
    print(f"\n{args.users} users, {args.duration} s, all services on 127.0.0.1 ({os.cpu_count()} cores)")
    rows = print_stats(prefix)
    failures = sum(int(r["Failure Count"]) for r in rows if r["Name"] == "Aggregated")
    print(f"\nCSV in {prefix.parent}; locust exit code {result.returncode}")
    return 0 if failures == 0 and result.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
