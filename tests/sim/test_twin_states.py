"""The twin saves its state when the what-if service asks, over a nats-server with the bus users'
permissions: the whatif user gets the answer, the whatif-worker user reads the state and SUMO loads
it; no other user may ask."""

from __future__ import annotations

import asyncio
import threading
from importlib import import_module
from pathlib import Path
from typing import Any

import nats
import pytest
from almere.whatif.v1 import runs_pb2
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from apps.natsd import NatsServer
from contract.bus import TWIN_STATE_REQUEST, TWIN_STATES_BUCKET
from libs.sumo_tools import sumo_binary
from sim.bus_listener import BusListener
from sim.incidents import ScriptedIncidents
from sim.runner import RunSpec, prepare, sumo_args
from sim.twin_states import TwinIdentity, TwinStates

SCENARIO = "almere-centrum"


def _step(ls: Any, states: TwinStates, stop: threading.Event) -> None:
    while not stop.is_set():
        ls.simulationStep()
        states.step(float(ls.simulation.getTime()))


async def test_the_twin_saves_its_state_for_the_whatif_service(nats_server: NatsServer, tmp_path: Path) -> None:
    import_module("sumo")
    import libsumo as ls

    spec = RunSpec(scenario=SCENARIO, mode="none", seed=1, out_root=tmp_path / "sim", end_s=3600, scale=0.1)
    built = prepare(spec)
    (tmp_path / "run").mkdir()
    ls.start([sumo_binary("sumo"), *sumo_args(spec, built, tmp_path / "run")])
    twin = {k: v for k, v in nats_server.client_options("twin").items() if k != "inbox_prefix"}
    bus = BusListener(nats_server.url, replayed=[], live=[], identity=twin, serve_states=True)
    states = TwinStates(
        sumo=ls,
        bus=bus,
        identity=TwinIdentity(
            scenario=SCENARIO, seed=1, scale=0.1, begin_s=0.0, end_s=3600, mode="none", variant="", run_tag="test"
        ),
        incidents=ScriptedIncidents(ls, ()),
        facilities=[],
        responders=(),
        walks={},
        adaptive_tls_ids=list,
    )
    stop = threading.Event()
    stepping = asyncio.create_task(asyncio.to_thread(_step, ls, states, stop))
    whatif = await nats.connect(nats_server.url, **nats_server.client_options("whatif"))
    worker = await nats.connect(nats_server.url, **nats_server.client_options("whatif-worker"))
    observer = await nats.connect(nats_server.url, **nats_server.client_options("observer"))
    try:
        request = runs_pb2.SaveStateRequest(what_if="w1", horizon_seconds=0).SerializeToString()
        reply = await whatif.request(TWIN_STATE_REQUEST, request, timeout=10)
        saved = runs_pb2.SavedState.FromString(reply.data)
        assert not saved.error, saved.error
        assert saved.object_name.startswith(f"{SCENARIO}-test-") and saved.scenario == SCENARIO
        state = await (await worker.jetstream().object_store(TWIN_STATES_BUCKET)).get(saved.object_name)
        assert state.data
        # Anyone else asking is refused by the server (a permissions violation: no one hears it).
        with pytest.raises((NoRespondersError, NatsTimeout)):
            await observer.request(TWIN_STATE_REQUEST, request, timeout=1)
    finally:
        stop.set()
        await stepping
        bus.close()
        ls.close()
        for nc in (whatif, worker, observer):
            await nc.close()
    path = tmp_path / "state.xml.gz"
    path.write_bytes(state.data)
    ls.start([sumo_binary("sumo"), "-c", str(built.config), "--load-state", str(path), "--no-step-log"])
    try:
        assert ls.simulation.getTime() == pytest.approx(saved.sim_time_seconds)
    finally:
        ls.close()
