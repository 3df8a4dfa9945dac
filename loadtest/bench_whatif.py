"""What-if runs, measured: the twin plays the collision morning with the services (30 simulated seconds
to the wall second, as a city's twin would run ahead of it); at the collision the control room asks
for three response plans x three seeds x 60 minutes:

1. from the twin's exact state: the wall time until every run is in, and the parallel speed-up (the
   runs' own wall times summed, against the what-if's wall time: what one process would have taken);
2. from the twin's state and from the services' live picture at once: the reconstruction's error
   per plan and KPI against the twin state's forecast;
3. when the twin has run past the horizon: each start's "do nothing" forecast against what happened.

Run: `.venv/bin/python loadtest/bench_whatif.py [--seeds 3] [--horizon 60]` (make bench-whatif)."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from almere.whatif.v1 import whatif_pb2 as w

from apps.coupled import coupled_stack
from apps.demo.whatif import spec_of
from apps.whatif import client
from sim.runner import run_many


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--horizon", type=float, default=60, help="minutes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        spec = spec_of(out)
        with coupled_stack([spec], lambda _: None, stack_dir=out / "stack") as stack, ThreadPoolExecutor(1) as pool:
            auth = (("authorization", f"Bearer {stack.credentials['engineer']}"),)
            twin = pool.submit(run_many, [replace(spec, services_dir=stack.data_dir)], workers=1)
            with stack.blocking_channel("incidents") as channel:
                incident = client.wait_for_incident(channel, auth)
            plans = client.response_plans(incident)
            with stack.blocking_channel("whatif") as channel:

                def ask(sources: list[w.StartSource.ValueType]) -> tuple[w.WhatIf, float]:
                    asked = time.perf_counter()
                    asking = w.WhatIf(horizon_minutes=args.horizon, seeds=args.seeds, plans=plans)
                    asking.start_sources.extend(sources)
                    done = client.run_what_if(channel, auth, asking)
                    if done.state != w.WhatIf.STATE_SUCCEEDED:
                        raise RuntimeError(f"{done.name} failed: {done.error}")
                    return done, time.perf_counter() - asked

                both, _ = ask([w.START_SOURCE_TWIN_STATE, w.START_SOURCE_LIVE_PICTURE])
                alone, wall = ask([w.START_SOURCE_TWIN_STATE])
                checked = client.wait_for_checks(channel, auth, both.name)
            twin.result()
    runs = alone.runs_total
    summed = sum(r.run_seconds for r in alone.results)
    print(f"\n{len(plans)} plans x {args.seeds} seeds x {args.horizon:g} min from the twin's state: {runs} runs")
    print(f"  wall time {wall:.1f} s (the twin running beside it at 30x real time)")
    if summed:
        print(f"  the runs' own wall times summed {summed:.1f} s: parallel speed-up {summed / wall:.2f}x")
    print("\nranking:")
    for line in client.ranking(both):
        print(line)
    print("\nthe live picture's forecast against the twin state's (relative error per plan and KPI):")
    for e in both.start_errors:
        print(f"  {e.plan_id:<22} {e.kpi:<24} twin {e.twin_state:9.1f}  live {e.live_picture:9.1f}  "
              f"{100 * e.relative_error:+6.1f} %")  # fmt: skip
    print("\n'do nothing' against what happened in the twin:")
    for line in client.checks(checked):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
