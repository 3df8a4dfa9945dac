"""The two ways adaptive control reaches SUMO give the same lights: the same seed run with the
controllers in-process (direct, for batch evaluation) and with the controllers in the optimizer,
each decision proposed to the signal service and shown only once activated (the services, as
started by `almere up`), shows identical phase sequences at every light, second by second."""

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
        with grpc.insecure_channel(endpoints["signals"]) as channel:
            history = signals_pb2_grpc.SignalServiceStub(channel).ListIntersectionHistory(
                spb.ListIntersectionHistoryRequest(parent="intersections/j22", page_size=1000),
                metadata=(("authorization", f"Bearer {engineer}"),),
            )

    histories = services_run["histories"]
    assert len(histories) == 22
    switches = {tls: len(h) for tls, h in histories.items()}
    assert sum(switches.values()) > 22 * 20, f"too few changes to compare: {switches}"
    for tls, shown in direct_run["histories"].items():
        assert histories[tls] == shown, f"{tls}: the services showed another sequence than direct mode"
    # Each of those changes went through the signal service: proposed by the optimizer, activated.
    activated = [e for e in history.entries if e.action == "plan_activated" and e.actor == "optimizer"]
    proposed = [e for e in history.entries if e.action == "plan_proposed" and e.actor == "optimizer"]
    assert len(activated) == len(proposed) >= switches["j22"] // 3
