"""The two ways adaptive control reaches SUMO give the same lights: the same seed run with the
controllers in-process (direct, for batch evaluation) and with the controllers in the optimizer,
each decision applied at the signal service and shown only once applied (the services, as started
by `almere up`, over one ControlSignals stream), shows identical phase sequences at every light,
second by second."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import grpc
from almere.signals.v1 import signals_pb2 as spb
from almere.signals.v1 import signals_pb2_grpc

from apps.coupled import adaptive_stack
from apps.signal_bench import ALMERE, bench_map, record_states

RUN_S = 600.0
SEED = 2


def test_direct_and_services_modes_show_identical_phase_sequences(tmp_path: Path) -> None:
    network = bench_map(ALMERE, tmp_path, SEED).network
    with (
        adaptive_stack(network, tmp_path / "services") as via,
        ProcessPoolExecutor(2, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool,
    ):
        direct = pool.submit(record_states, ALMERE, "ours", RUN_S, seed=SEED)
        services = pool.submit(record_states, ALMERE, "ours", RUN_S, seed=SEED, via=via)
        direct_run, services_run = direct.result(), services.result()

        endpoints = json.loads((tmp_path / "services" / "endpoints.json").read_text())
        engineer = json.loads((tmp_path / "services" / "credentials.json").read_text())["engineer"]["token"]
        auth = (("authorization", f"Bearer {engineer}"),)
        with grpc.insecure_channel(endpoints["signals"]) as channel:
            signals = signals_pb2_grpc.SignalServiceStub(channel)
            parent = "intersections/j22"
            history = signals.ListIntersectionHistory(
                spb.ListIntersectionHistoryRequest(parent=parent, page_size=1000), metadata=auth
            )
            steps = signals.ListSteps(spb.ListStepsRequest(parent=parent, page_size=1000), metadata=auth).steps
            plans = signals.ListPlans(spb.ListPlansRequest(parent=parent, page_size=1000), metadata=auth).plans

    histories = services_run["histories"]
    assert len(histories) == 22
    switches = {tls: len(h) for tls, h in histories.items()}
    assert sum(switches.values()) > 22 * 20, f"too few changes to compare: {switches}"
    for tls, shown in direct_run["histories"].items():
        assert histories[tls] == shown, f"{tls}: the services showed another sequence than direct mode"
    # Each of those changes went through the signal service: the takeover as a plan version, every
    # step after it as a compact step record (numbered, none lost), audited in batches.
    assert [(p.version, p.type, p.author) for p in plans][:1] == [(2, spb.PLAN_TYPE_ADAPTIVE, "optimizer")]
    assert len(plans) == 2
    assert [s.sequence for s in steps] == list(range(len(steps), 0, -1))
    assert len(steps) >= switches["j22"] // 3
    assert all(s.actor == "optimizer" and s.plan_version == 2 for s in steps)
    batches = [e.reason for e in history.entries if e.action == "steps_applied" and e.actor == "optimizer"]
    covered = [n for b in batches for n in range(int(b.split()[1].split("-")[0]), int(b.split("-")[1]) + 1)]
    assert sorted(covered) == [s.sequence for s in reversed(steps)]
