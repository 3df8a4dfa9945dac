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
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(HERE / "locustfile.py"),
                "--headless",
                "-u",
                str(args.users),
                "-r",
                str(args.spawn_rate),
                "-t",
                f"{args.duration}s",
                "--stop-timeout",
                "5",
                "--csv",
                str(prefix),
                "--only-summary",
                "--loglevel",
                "WARNING",
            ],
            env=dict(os.environ, ALMERE_LOADTEST_DIR=str(run_dir)),
            timeout=args.duration + 120,
            check=False,
        )
    finally:
        stack.stop()
    rows = list(csv.DictReader((prefix.with_name("locust_stats.csv")).open()))
    print(f"\n{args.users} users, {args.duration} s, all services on 127.0.0.1 ({os.cpu_count()} cores)")
    print(f"{'call':<22} {'requests':>8} {'fail':>5} {'rps':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    for row in rows:
        print(
            f"{row['Name']:<22} {row['Request Count']:>8} {row['Failure Count']:>5} {float(row['Requests/s']):>7.1f} "
            f"{row['50%']:>7} {row['95%']:>7} {row['99%']:>7}"
        )
    failures = sum(int(r["Failure Count"]) for r in rows if r["Name"] == "Aggregated")
    print(f"\nCSV in {prefix.parent}; locust exit code {result.returncode}")
    return 0 if failures == 0 and result.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
