"""The what-if worker with a real nats-server (the bus users' permissions) and real SUMO: it takes run
requests off the WHATIF_RUNS work queue, loads the twin's state from the object store, publishes
each result (de-duplicated by run id) and acknowledges; a run it cannot start comes back as a failed
result, an unreadable request is dropped, and neither stops it."""

from __future__ import annotations

import asyncio
from importlib import import_module
from pathlib import Path

import nats
from almere.whatif.v1 import runs_pb2
from almere.whatif.v1 import whatif_pb2 as w
from nats.js.api import ObjectStoreConfig

from apps.natsd import NatsServer
from apps.whatif.worker import work
from contract.bus import DEFAULT_LIMITS, RUN_REQUESTED, TWIN_STATES_BUCKET, WHATIF_RESULTS, WHATIF_RUNS
from libs.sumo_tools import sumo_binary
from sim.runner import RunSpec, prepare, sumo_args

SCENARIO, SCALE, SCENARIO_S, NOW = "almere-centrum", 0.1, 1200.0, 300


def _saved_state(root: Path) -> bytes:
    """The twin's state at NOW, its scenario built where the worker builds (so it finds it built)."""
    import_module("sumo")
    import libsumo as ls

    spec = RunSpec(scenario=SCENARIO, mode="none", seed=1, out_root=root / "scenarios", end_s=SCENARIO_S, scale=SCALE)
    built = prepare(spec)
    (root / "twin").mkdir()
    ls.start([sumo_binary("sumo"), *sumo_args(spec, built, root / "twin")])
    try:
        while ls.simulation.getTime() < NOW:
            ls.simulationStep()
        ls.simulation.saveState(str(root / "state.xml.gz"))
    finally:
        ls.close()
    return (root / "state.xml.gz").read_bytes()


def _request(run_id: str, object_name: str) -> runs_pb2.RunRequest:
    saved = runs_pb2.SavedState(
        object_name=object_name,
        scenario=SCENARIO,
        seed=1,
        scale=SCALE,
        sim_time_seconds=NOW,
        mode="none",
        scenario_seconds=SCENARIO_S,
    )
    return runs_pb2.RunRequest(
        what_if="w1",
        run_id=run_id,
        plan=w.ResponsePlan(plan_id="do-nothing"),
        seed=2,
        horizon_seconds=120,
        start_source=w.START_SOURCE_TWIN_STATE,
        saved_state=saved,
    )


async def test_the_worker_runs_requests_from_the_queue(nats_server: NatsServer, tmp_path: Path) -> None:
    root = tmp_path / "worker"
    state = await asyncio.to_thread(_saved_state, root)
    twin = await nats.connect(nats_server.url, **nats_server.client_options("twin"))
    service = await nats.connect(nats_server.url, **nats_server.client_options("whatif"))
    stop = asyncio.Event()
    worker = asyncio.create_task(
        work(
            connect_options={"servers": nats_server.url, **nats_server.client_options("whatif-worker")},
            processes=1,
            stop=stop,
            root=root,
        )
    )
    try:
        store = await twin.jetstream().create_object_store(
            TWIN_STATES_BUCKET, config=ObjectStoreConfig(bucket=TWIN_STATES_BUCKET)
        )
        await store.put("twin-300", state)
        js = service.jetstream()
        await js.add_stream(WHATIF_RUNS.config(DEFAULT_LIMITS))
        await js.add_stream(WHATIF_RESULTS.config(DEFAULT_LIMITS))
        results = await js.pull_subscribe(WHATIF_RESULTS.subjects, durable="test", stream=WHATIF_RESULTS.name)
        await js.publish(WHATIF_RUNS.subject(RUN_REQUESTED, "garbage"), b"\xff\x00not a request")
        for run_id, name in (("run-ok", "twin-300"), ("run-gone", "twin-expired")):
            await js.publish(WHATIF_RUNS.subject(RUN_REQUESTED, run_id), _request(run_id, name).SerializeToString())
        got: dict[str, runs_pb2.RunResult] = {}
        headers: dict[str, str] = {}
        async with asyncio.timeout(120):
            while len(got) < 2:
                try:
                    messages = await results.fetch(2, timeout=2)
                except nats.errors.TimeoutError:
                    continue
                for message in messages:
                    result = runs_pb2.RunResult.FromString(message.data)
                    got[result.run_id] = result
                    headers[result.run_id] = (message.headers or {}).get("Nats-Msg-Id", "")
                    await message.ack()
        # Every request is settled: the work queue keeps none (acknowledged or dropped).
        for _ in range(150):
            left = (await js.stream_info(WHATIF_RUNS.name)).state.messages
            if not left:
                break
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        finished = await worker
        for nc in (twin, service):
            await nc.close()
    ok, gone = got["run-ok"], got["run-gone"]
    assert not ok.error, ok.error
    assert ok.kpis["arrived"] > 0 and ok.kpis["network_delay_h"] >= 0 and ok.seed == 2 and ok.what_if == "w1"
    assert len(ok.occupancy) == 6 and ok.wall_seconds > 0
    assert "twin-expired" in gone.error and not gone.kpis
    assert headers == {"run-ok": "run-ok", "run-gone": "run-gone"}  # the service drops a run sent twice
    assert finished == 2
    assert left == 0
