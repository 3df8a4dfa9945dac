"""The what-if worker: pulls run requests from WHATIF_RUNS (a work queue: each run goes to one worker),
simulates each in a process of its pool (libsumo is one SUMO per process, and a crash takes only that
process), publishes the RunResult to WHATIF_RESULTS (de-duplicated by run id) and only then
acknowledges the request. A worker that dies leaves its runs unacknowledged: the bus hands them to
another after ACK_WAIT_S, so a run is never lost, at worst simulated twice."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import nats
from almere.whatif.v1 import runs_pb2
from google.protobuf.message import DecodeError
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig

from contract.bus import (
    DEFAULT_LIMITS,
    RUN_FINISHED,
    TWIN_STATES_BUCKET,
    WHATIF_RESULTS,
    WHATIF_RUNS,
    ensure_stream,
)

log = logging.getLogger(__name__)

DURABLE = "whatif-workers"
ACK_WAIT_S = 60
PROGRESS_S = 20  # a long run tells the bus it is still at work, well inside ACK_WAIT_S
MAX_DELIVER = 5
RUNS_PER_PROCESS = 10  # then a fresh process: whatever a SUMO left behind goes with it
FETCH_WAIT_S = 1.0


def simulate_in_child(request: bytes, state_file: str | None, work_dir: str, build_root: str) -> bytes:
    """In a pool process: one run, its result serialized (what crosses the process boundary)."""
    from apps.whatif.simulate import simulate  # imported in the child: SUMO loads there

    result = simulate(
        runs_pb2.RunRequest.FromString(request),
        state_file=Path(state_file) if state_file else None,
        work_dir=Path(work_dir),
        build_root=Path(build_root),
    )
    return result.SerializeToString()


@dataclass(kw_only=True)
class Worker:
    js: JetStreamContext
    processes: int
    root: Path

    def __post_init__(self) -> None:
        self._pool = self._new_pool()
        self._slots = asyncio.Semaphore(self.processes)
        self._tasks: set[asyncio.Task[None]] = set()
        self.finished = 0

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.processes, mp_context=get_context("spawn"), max_tasks_per_child=RUNS_PER_PROCESS
        )

    async def serve(self, stop: asyncio.Event) -> None:
        # The worker may start before the service that owns the stream (which sets its limits).
        await ensure_stream(self.js, WHATIF_RUNS.config(DEFAULT_LIMITS), update=False)
        config = ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ACK_WAIT_S,
            max_deliver=MAX_DELIVER,
            max_ack_pending=self.processes * 2,
        )
        subscription = await self.js.pull_subscribe(
            WHATIF_RUNS.subjects, durable=DURABLE, stream=WHATIF_RUNS.name, config=config
        )
        try:
            while not stop.is_set():
                await self._slots.acquire()
                try:
                    messages = await subscription.fetch(1, timeout=FETCH_WAIT_S)
                except (TimeoutError, nats.errors.TimeoutError):
                    self._slots.release()
                    continue
                except Exception as exc:
                    self._slots.release()
                    log.warning("fetch from %s failed: %s", WHATIF_RUNS.name, exc)
                    await asyncio.sleep(0.5)
                    continue
                task = asyncio.create_task(self._handle(messages[0]))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self._pool.shutdown(cancel_futures=True)

    async def _handle(self, message: Msg) -> None:
        try:
            try:
                request = runs_pb2.RunRequest.FromString(message.data)
            except DecodeError:
                log.error("dropping an unreadable run request on %s", message.subject)
                await message.term()
                return
            result = await self._run(request, message)
            subject = WHATIF_RESULTS.subject(RUN_FINISHED, request.run_id)
            await self.js.publish(subject, result.SerializeToString(), headers={"Nats-Msg-Id": request.run_id})
            await message.ack()
            self.finished += 1
            log.info(
                "run finished",
                extra={"run_id": request.run_id, "wall_s": round(result.wall_seconds, 2), "error": result.error},
            )
        except Exception:
            log.exception("run on %s failed; the bus delivers it again", message.subject)
            with contextlib.suppress(Exception):
                await message.nak(delay=2)
        finally:
            self._slots.release()

    async def _run(self, request: runs_pb2.RunRequest, message: Msg) -> runs_pb2.RunResult:
        work_dir = Path(tempfile.mkdtemp(prefix=f"run-{request.run_id[:40]}-", dir=self.root))
        try:
            state_file = None
            if request.WhichOneof("start") == "saved_state":
                state_file = work_dir / "state.xml.gz"
                try:
                    await self._download(request.saved_state.object_name, state_file)
                except Exception as exc:  # gone (its time to live is up) or unreadable: the run cannot start
                    return _failed(request, f"the twin's state {request.saved_state.object_name!r}: {exc!r}")
            future = asyncio.get_running_loop().run_in_executor(
                self._pool,
                simulate_in_child,
                request.SerializeToString(),
                str(state_file) if state_file else None,
                str(work_dir),
                str(self.root / "scenarios"),
            )
            while True:
                done, _ = await asyncio.wait({future}, timeout=PROGRESS_S)
                if done:
                    break
                with contextlib.suppress(Exception):
                    await message.in_progress()
            try:
                return runs_pb2.RunResult.FromString(future.result())
            except BrokenProcessPool:
                self._pool = self._new_pool()
                return _failed(request, "the simulation process died")
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)

    async def _download(self, name: str, path: Path) -> None:
        bucket = await self.js.object_store(TWIN_STATES_BUCKET)
        result = await bucket.get(name)
        if not result.data:
            raise LookupError("empty state")
        await asyncio.to_thread(path.write_bytes, result.data)


def _failed(request: runs_pb2.RunRequest, reason: str) -> runs_pb2.RunResult:
    return runs_pb2.RunResult(
        what_if=request.what_if,
        run_id=request.run_id,
        plan_id=request.plan.plan_id,
        seed=request.seed,
        start_source=request.start_source,
        error=reason,
    )


async def work(
    *, connect_options: dict[str, Any], processes: int, stop: asyncio.Event, root: Path | None = None
) -> int:
    """Serve runs until `stop`; returns how many finished. `connect_options`: nats.connect's
    arguments (servers, identity, reconnecting, TLS; see services.common.bus.connect_options)."""
    nc = await nats.connect(**connect_options)
    root = root or Path(tempfile.gettempdir()) / "almere-whatif-worker"
    root.mkdir(parents=True, exist_ok=True)
    worker = Worker(js=nc.jetstream(timeout=10), processes=processes, root=root)
    try:
        await worker.serve(stop)
    finally:
        await nc.drain()
    return worker.finished
