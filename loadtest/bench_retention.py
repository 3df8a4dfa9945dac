"""Retention of adaptive steps over a month (`make bench-retention`, issue #20).

Writes `--days` of adaptive step rows at the measured rate (`--steps-per-day` per light, 3,000 by
default: one every ~29 s) for `--lights` lights into two SQLite files (WAL, synchronous=FULL, as the
services run them), a simulated day at a time, each hour in one transaction. One file gets the city's
retention as the signal service runs it (services/signals/compaction.py through the same
`Housekeeping` rounds of at most `retention_batch_rows` rows, at every simulated hour, until a round
finds less than a full batch); the other none. Every `--every` days it prints both files' rows and
disk (SQLite file size with its WAL; freed pages are reused, not returned) and the retention rounds'
time. With the default 14 days of raw steps, rows and disk stop growing from day 15: the plateau.

    python loadtest/bench_retention.py [--lights 22] [--days 30] [--steps-per-day 3000] [--dir PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, func, insert, select, text
from sqlmodel import Session
from tqdm import tqdm

from services.common.config import Settings
from services.common.db import create_tables, make_engine, writer
from services.common.housekeeping import Housekeeping
from services.signals import compaction
from services.signals.models import StepRow, StepSummaryRow

START = datetime(2026, 1, 1, tzinfo=UTC)
PHASES = "GGGgrrrr:42,yyyyrrrr:3,rrrrGGGg:27,rrrryyyy:3"  # a typical 4-phase adaptive step, as stored


def _hour_of_steps(*, lights: int, per_hour: int, start: datetime, sequences: list[int]) -> list[dict[str, Any]]:
    """Every light's steps of one hour, interleaved in time as the ledger records them."""
    gap = 3600 / per_hour
    rows = []
    for n in range(per_hour):
        for light in range(lights):
            sequences[light] += 1
            rows.append(
                {
                    "intersection_id": f"light-{light:03d}",
                    "sequence": sequences[light],
                    "plan_version": 2,
                    "time": start + timedelta(seconds=n * gap + light * 0.01),
                    "actor": "optimizer",
                    "phases": PHASES,
                    "reason": "pressure",
                }
            )
    return rows


def _disk(engine: Engine) -> int:
    path = Path(str(engine.url.database))
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)


def _count(engine: Engine, table: Any) -> int:
    with Session(engine) as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


def _retain(engine: Engine, keeper: Housekeeping, now: datetime) -> int:
    """Rounds at `now` until one finds less than a full batch, as the schedule runs them; how many."""
    rounds = 0
    while rounds == 0 or keeper.due is None:
        with Session(writer(engine)) as session, session.begin():
            keeper(session, [now])
        rounds += 1
    return rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lights", type=int, default=22)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--steps-per-day", type=int, default=3000)
    parser.add_argument("--every", type=int, default=5, help="print every this many days")
    parser.add_argument("--dir", type=Path, help="where the SQLite files go (default: a temporary folder)")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="bench-retention-"))
    settings = Settings(data_dir=folder)
    engines = {kind: make_engine(f"sqlite:///{folder / f'steps-{kind}.db'}") for kind in ("with", "without")}
    for engine in engines.values():
        create_tables(engine, [StepRow, StepSummaryRow])
    keeper = compaction.housekeeping(settings)
    per_hour = args.steps_per_day // 24
    sequences = {kind: [0] * args.lights for kind in engines}
    retention_s, rounds = 0.0, 0
    print(
        f"{args.lights} lights x {per_hour * 24} steps/day x {args.days} days; raw steps kept "
        f"{settings.retention_steps_days} days, summaries {settings.retention_steps_summary_days}, "
        f"rounds of at most {settings.retention_batch_rows} rows; files in {folder}"
    )
    lines = []
    with tqdm(total=args.days * 24, unit="h", desc="simulated hours") as bar:
        for day in range(1, args.days + 1):
            for hour in range(24):
                start = START + timedelta(days=day - 1, hours=hour)
                for kind, engine in engines.items():
                    rows = _hour_of_steps(lights=args.lights, per_hour=per_hour, start=start, sequences=sequences[kind])
                    with Session(writer(engine)) as session, session.begin():
                        session.execute(insert(StepRow), rows)
                began = time.perf_counter()
                rounds += _retain(engines["with"], keeper, start + timedelta(hours=1))
                retention_s += time.perf_counter() - began
                bar.update()
            if day % args.every == 0 or day == args.days:
                w, wo = engines["with"], engines["without"]
                lines.append(
                    f"day {day:3d}: with retention {_count(w, StepRow):>10,} steps + "
                    f"{_count(w, StepSummaryRow):>6,} summaries, {_disk(w) / 2**20:7.1f} MiB | without "
                    f"{_count(wo, StepRow):>10,} steps, {_disk(wo) / 2**20:7.1f} MiB | retention so far "
                    f"{rounds} rounds, {retention_s:.1f} s"
                )
                tqdm.write(lines[-1])
    for engine in engines.values():
        with engine.connect() as connection:
            connection.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
        engine.dispose()
    print("\n".join(["", "summary (after a WAL checkpoint):", *lines]))
    with_, without = (folder / f"steps-{kind}.db" for kind in engines)
    print(f"files: with {with_.stat().st_size / 2**20:.1f} MiB, without {without.stat().st_size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
