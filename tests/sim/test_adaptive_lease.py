"""Lights fail safe in the twin (real SUMO, signal service, optimizer, NATS): almere-centrum runs
with the optimizer driving every light through the signal service; mid-run the optimizer process is
killed. Each light plays out and holds its last step until its adaptive lease runs out, then the
signal service hands it back to its timing plan and the twin installs that through yellow and all
red. The run completes, vehicles keep arriving, and no light ever shows two crossing priority
greens, a green cut to red without yellow, or a green starting beside a crossing yellow."""

from __future__ import annotations

import json
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from statistics import mean

import pytest
from almere.optimizer.v1.optimizer_pb2_grpc import OptimizerServiceStub

from apps.coupled import import_lights
from apps.signal_bench import ALMERE, bench_map, sumo_args
from apps.stack import Stack, dev_callers
from contract.bus import SIGNALS
from services.common.config import Settings
from services.signals.network_import import read_lights
from services.signals.steps import FLUSH_S  # the lease is recorded up to this late, and expires as much later
from sim import light_driver
from sim.adaptive_signals import ServiceControl
from sim.bus_listener import BusListener, hold_until, twin_identity
from sim.channels import bus_tls, open_channel
from sim.decision_applier import SIGNAL_SUBJECTS, DecisionApplier

RUN_S, KILL_S = 1200.0, 600.0  # simulated
WINDOW_S = 300.0  # delays compared over the arrivals of this long before the kill and after it
SETTLE_S = 60.0  # the vehicles caught in the hand-back's transition get through meanwhile
LEASE_S, POLL_S = 2.0, 0.2
SLACK_S = 5.0  # the hand-back's commit, publication and delivery to the twin, on a loaded machine (load ~9: > 2.5 s)
SEED = 2


def _unsafe(foes: dict[int, list[int]], before: str, after: str) -> list[str]:
    """What a light must never show between two steps (SUMO's foes: links whose paths cross)."""
    found = []
    for k, now in enumerate(after):
        crossing = foes.get(k, [])
        if now == "G" and any(after[f] == "G" for f in crossing):
            found.append(f"link {k} 'G' beside a crossing 'G'")
        if before[k] in "Gg" and now == "r":
            found.append(f"link {k}: green -> red without yellow")
        if now == "G" and before[k] not in "Gg" and any(after[f] in "yY" for f in crossing):
            found.append(f"link {k}: green while a crossing link still shows yellow")
    return found


def _trips(tripinfo: Path) -> list[tuple[float, float, float]]:
    """(arrival, time loss, waiting time) of every vehicle that arrived."""
    root = ET.parse(tripinfo).getroot()
    return [
        (float(t.get("arrival", -1)), float(t.get("timeLoss", 0)), float(t.get("waitingTime", 0)))
        for t in root.iter("tripinfo")
        if float(t.get("arrival", -1)) >= 0
    ]


def test_lights_fall_back_to_their_plans_safely_when_the_optimizer_dies(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ALMERE_SIGNAL_ADAPTIVE_LEASE_SECONDS", str(LEASE_S))
    monkeypatch.setenv("ALMERE_SCHEDULER_POLL_SECONDS", str(POLL_S))
    bench = bench_map(ALMERE, tmp_path, SEED)
    foes = {
        light.intersection.sumo_tls_id: {link.index: list(link.foes) for link in light.intersection.links}
        for light in read_lights(bench.network)
    }
    stack = Stack(
        settings=Settings(data_dir=tmp_path / "services", network_file=bench.network, log_level="WARNING"),
        services=["signals", "optimizer"],
        callers=dev_callers("engineer", "sim"),
    )
    stack.start()
    try:
        import_lights(stack)
        endpoints = json.loads((stack.data_dir / "endpoints.json").read_text())
        keys = endpoints.get("nats-keys")
        bus = BusListener(
            endpoints["nats"],
            replayed=[(SIGNALS.name, SIGNAL_SUBJECTS[0])],
            live=[],
            identity={**twin_identity(Path(keys) if keys else None), **bus_tls(endpoints)},
        )
        sim_token = json.loads((stack.data_dir / "credentials.json").read_text())["sim"]["token"]
        channel = open_channel(endpoints, "optimizer")
        control = ServiceControl(OptimizerServiceStub(channel), (("authorization", f"Bearer {sim_token}"),))
        applier = DecisionApplier(tmp_path / "applied.jsonl", plans=False, guidance=False)
        applier.adaptive = control
        tripinfo = tmp_path / "tripinfo.xml"
        args = sumo_args(bench, "ours", seed=SEED, stop=RUN_S, folder=tmp_path)
        ls = light_driver.start([*args, "--tripinfo-output", str(tripinfo)])
        violations: list[str] = []

        def deliver(at: float) -> Callable[[str, bytes], None]:
            return lambda subject, payload: applier.apply(ls, at, subject=subject, payload=payload)

        try:
            now = ls.simulation.getTime()
            control.start(ls, now, record=False)
            shown = {tls: ls.trafficlight.getRedYellowGreenState(tls) for tls in foes}
            killed_at = killed_wall = 0.0  # wall: monotonic, and as the records have it
            controlled_before = 0
            while now < RUN_S:
                for subject, payload in bus.drain():
                    deliver(now)(subject, payload)
                ls.simulationStep()
                now = ls.simulation.getTime()
                control.step(ls, now)
                for tls, links in foes.items():
                    state = ls.trafficlight.getRedYellowGreenState(tls)
                    violations += [f"{tls} at {now:g} s: {v}" for v in _unsafe(links, shown[tls], state)]
                    shown[tls] = state
                if now == KILL_S:
                    controlled_before = len(control.controlled)
                    stack.processes["optimizer"].kill()
                    killed_at, killed_wall = time.monotonic(), time.time()
                if killed_at and control.controlled and now - KILL_S < 4 * (LEASE_S + SLACK_S):
                    # The street's own time while the lights wait for their hand-back (wall-clock leases).
                    hold_until(killed_at + now - KILL_S, bus, deliver(now))
        finally:
            ls.close()
            bus.close()
            channel.close()
            applier.close()
    finally:
        stack.stop()

    assert controlled_before == len(foes) == 22, "the optimizer drove every light before it died"
    assert control.lost_at is not None and control.lost_at >= KILL_S
    assert not control.controlled, "every light is back on its timing plan"
    applied = [json.loads(line) for line in (tmp_path / "applied.jsonl").read_text().splitlines()]
    handed_back = {a["tls"]: a for a in applied if a.get("handed_back")}
    assert set(handed_back) == set(foes)
    assert all(a["reason"].startswith("adaptive lease expired: no step for") for a in handed_back.values())
    latest_s = max(a["wall_s"] for a in handed_back.values()) - killed_wall
    assert latest_s <= LEASE_S + FLUSH_S + POLL_S + SLACK_S, f"the last light fell back {latest_s:g} s after the kill"
    assert not violations, violations[:10]

    trips = _trips(tripinfo)
    before = [t for t in trips if KILL_S - WINDOW_S <= t[0] < KILL_S]
    after = [t for t in trips if KILL_S + SETTLE_S <= t[0] < KILL_S + SETTLE_S + WINDOW_S]
    print(f"\nkilled the optimizer at {KILL_S:g} s; all 22 lights on their timing plans {latest_s:.1f} s later")
    for label, window in (("adaptive, before", before), ("timing plans, after", after)):
        print(
            f"{label}: {len(window)} arrivals in {WINDOW_S:g} s, mean time loss {mean(t[1] for t in window):.1f} s, "
            f"mean waiting {mean(t[2] for t in window):.1f} s"
        )
    assert len(after) > len(before) / 2, "vehicles keep flowing after the kill"
