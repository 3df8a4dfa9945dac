"""Demo scene 6: deciding before acting. The twin plays the collision morning with the services, 20
simulated seconds to the wall second; when the police report the collision, the control room asks
what the next hour brings under three response plans (three seeds each, from the twin's exact state
and from the services' live picture), adopts the best, and when the hour has passed sees how the
forecast of doing nothing compares with what happened."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from almere.whatif.v1 import whatif_pb2 as w

from apps.coupled import coupled_stack
from apps.whatif import client
from sim.runner import RunSpec, run_many
from sim.variants import VARIANTS

SCENARIO = "almere-centrum-incident"
HORIZON_MIN = 60
SEEDS = 3
# Simulated seconds per wall second: the control room's minutes pass while it decides. At 20x the
# 45-minute collision lasts 135 s of wall time, longer than the 18 runs take on two cores (68-98 s
# measured), so the adopted closure still has an incident to act on.
PACE = 20.0


def spec_of(out: Path) -> RunSpec:
    collision = VARIANTS[SCENARIO].incidents[0].start_s
    end_s = collision + (HORIZON_MIN + 5) * 60  # the horizon seen out, for the forecast's check
    return RunSpec(
        scenario=SCENARIO, mode="coordinated", seed=1, out_root=out, end_s=end_s, scale=0.7, clock="realtime", pace=PACE
    )


def play(out: Path, say: Callable[[str], None]) -> bool:
    spec = spec_of(out)
    started = time.monotonic()
    with coupled_stack([spec], lambda _: None, stack_dir=out / "stack") as stack, ThreadPoolExecutor(1) as pool:
        auth = (("authorization", f"Bearer {stack.credentials['engineer']}"),)
        say(f"[what-if] the twin plays {SCENARIO} at {PACE:g}x real time with the services")
        twin = pool.submit(run_many, [replace(spec, services_dir=stack.data_dir)], workers=1)
        with stack.blocking_channel("incidents") as channel:
            incident = client.wait_for_incident(channel, auth)
        say(f"[what-if] police report: {incident.title} ({incident.network_location.edge_id})")
        plans = client.response_plans(incident)
        say(
            f"[what-if] {len(plans)} plans x {SEEDS} seeds x 2 starts, {HORIZON_MIN} simulated minutes each: "
            + ", ".join(p.plan_id for p in plans)
        )
        asked = time.monotonic()
        with stack.blocking_channel("whatif") as channel:
            what_if = client.run_what_if(
                channel,
                auth,
                w.WhatIf(
                    title=f"Response to {incident.title}",
                    horizon_minutes=HORIZON_MIN,
                    seeds=SEEDS,
                    start_sources=[w.START_SOURCE_TWIN_STATE, w.START_SOURCE_LIVE_PICTURE],
                    plans=plans,
                ),
            )
            say(f"[what-if] {what_if.runs_done} runs answered in {time.monotonic() - asked:.0f} s wall")
            if what_if.state != w.WhatIf.STATE_SUCCEEDED:
                say(f"[what-if] failed: {what_if.error}")
                return False
            for line in client.ranking(what_if):
                say(line)
            best = client.best_plan(what_if)
            adopted = client.adopt(channel, auth, what_if.name, best)
            say(f"[what-if] adopted {best}:")
            for change in adopted.changes:
                say(f"  {change}")
            say(f"[what-if] report with plots: {out / what_if.report_path}")
            checked = client.wait_for_checks(channel, auth, what_if.name)
        say("[what-if] an hour later, the forecasts of doing nothing against what happened in the twin:")
        for line in client.checks(checked):
            say(line)
        twin.result()
    say(f"[what-if] scene in {time.monotonic() - started:.0f} s wall")
    return bool(adopted.changes)
