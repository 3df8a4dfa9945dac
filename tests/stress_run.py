"""Run the whole test suite several times while every CPU is kept busy, as on a loaded CI machine.

`make test-stress` (RUNS=5 by default). Busy loops, one per core (HOGS to change), run beside
pytest; each run's failures are listed, and the exit status is non-zero when any run failed. A flaky
test shows up here long before it costs a submission.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY_LOOP = "while True: pass"


def start_hogs(count: int) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]


def stop_hogs(hogs: list[subprocess.Popen[bytes]]) -> None:
    for hog in hogs:
        hog.kill()
    for hog in hogs:
        hog.wait()


def run_suite(pytest_args: list[str], log: Path) -> tuple[int, list[str], float]:
    """One full pytest run; its exit code, failed test ids and wall time."""
    start = time.monotonic()
    with log.open("wb") as out:
        code = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfE", *pytest_args],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    failed = re.findall(r"^(?:FAILED|ERROR) (\S+)", log.read_text(errors="replace"), flags=re.MULTILINE)
    return code, failed, time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--hogs", type=int, default=os.cpu_count() or 2, help="busy processes beside pytest")
    parser.add_argument("--logs", type=Path, default=ROOT / "data" / "stress")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args()
    # Stopped with SIGTERM, still stop the busy processes (the `finally` below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.logs.mkdir(parents=True, exist_ok=True)
    failures = 0
    for run in range(1, args.runs + 1):
        hogs = start_hogs(args.hogs)
        try:
            code, failed, seconds = run_suite(args.pytest_args, args.logs / f"run-{run}.log")
        finally:
            stop_hogs(hogs)
        verdict = "passed" if code == 0 else f"FAILED (exit {code})"
        print(f"run {run}/{args.runs} with {args.hogs} busy processes: {verdict} in {seconds:.0f} s", flush=True)
        for test in failed:
            print(f"  {test}", flush=True)
        failures += code != 0
    print(f"{args.runs - failures} of {args.runs} runs passed; logs in {args.logs}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
