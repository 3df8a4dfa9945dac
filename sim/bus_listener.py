"""The twin's NATS connection, in a thread of its own (the runner's loop is synchronous): it receives
the decisions the twin applies between steps and publishes what the twin measures."""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy, ObjectStoreConfig, StreamConfig
from nats.js.errors import BucketNotFoundError

from contract.bus import TWIN_STATE_REQUEST, TWIN_STATES_BUCKET, ensure_stream
from contract.bus_access import TWIN_USER
from libs.nats_client import servers

Received = tuple[str, bytes]  # (subject, payload)
# Saved states are for what-if runs about now: an hour is plenty, and the bucket stays small.
STATES_TTL_S = 3600.0
STATES_MAX_BYTES = 256 * 1024**2


class BusListener:
    def __init__(
        self,
        url: str,
        *,
        replayed: Sequence[tuple[str, str]],
        live: Sequence[str],
        streams: Sequence[StreamConfig] = (),
        identity: Mapping[str, Any] | None = None,
        serve_states: bool = False,
    ) -> None:
        """`replayed`: (stream, subject) pairs delivered last-per-subject first (the state in force),
        then live; `live`: core subjects, from now on; `streams`: streams to create (when missing) for
        what we publish; `url`: one server or a cluster's, comma-separated; `identity`: the twin's
        credentials and TLS as nats.connect takes them (see `twin_identity`, sim.channels.bus_tls);
        `serve_states`: take save-state requests (TWIN_STATE_REQUEST) into `state_requests`, as
        (payload, reply subject), for the runner's thread (libsumo is not thread-safe)."""
        self.received: queue.Queue[Received] = queue.Queue()
        self.state_requests: queue.Queue[tuple[bytes, str]] = queue.Queue()
        self._serve_states = serve_states
        self._url = url
        self._identity = dict(identity or {})
        self._replayed, self._live, self._streams = list(replayed), list(live), list(streams)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._nc: Client | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._guarded(),), daemon=True)
        self._thread.start()
        # What is in force must be applied before the first step: wait for that backlog.
        if not self._ready.wait(15):
            self.close()
            raise TimeoutError(f"no answer from NATS at {url}")
        if self._error is not None:
            self._thread.join(5)
            raise RuntimeError(f"the twin's bus connection failed: {self._error!r}") from self._error

    async def _guarded(self) -> None:
        """Run the connection; a failure is handed to the runner instead of dying in this thread."""
        try:
            await self._run()
        except Exception as exc:
            self._error = exc
            if self._nc is not None and not self._nc.is_closed:
                await self._nc.close()
            self._ready.set()

    async def _run(self) -> None:
        self._stop = asyncio.Event()
        self._nc = nc = await nats.connect(servers(self._url), inbox_prefix=TWIN_USER.inbox_prefix, **self._identity)
        js = nc.jetstream()
        for config in self._streams:
            await ensure_stream(js, config, update=False)
        backlog = 0
        for stream_name, subject in self._replayed:
            info = await js.stream_info(stream_name, subjects_filter=subject)
            backlog += len(info.state.subjects or {})
        arrived = asyncio.Event() if backlog else None
        count = 0

        async def deliver(msg: Msg) -> None:
            nonlocal count
            self.received.put((msg.subject, msg.data))
            count += 1
            if arrived and count >= backlog:
                arrived.set()

        subscriptions: list[Any] = []
        for stream_name, subject in self._replayed:
            last = ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
            subscriptions.append(
                await js.subscribe(subject, stream=stream_name, cb=deliver, ordered_consumer=True, config=last)
            )
        for subject in self._live:
            subscriptions.append(await nc.subscribe(subject, cb=deliver))
        if self._serve_states:

            async def take(msg: Msg) -> None:
                self.state_requests.put((msg.data, msg.reply))

            subscriptions.append(await nc.subscribe(TWIN_STATE_REQUEST, cb=take))
        await nc.flush()
        if arrived:
            await asyncio.wait_for(arrived.wait(), 10)
        self._ready.set()
        await self._stop.wait()
        for subscription in subscriptions:  # ends the ordered consumers' own tasks too
            await subscription.unsubscribe()
        await nc.drain()

    def publish(self, messages: Sequence[Received]) -> None:
        """(subject, payload) pairs, handed to the bus thread at once (a hand-over each costs more
        than the publish)."""
        assert self._nc is not None
        nc = self._nc

        async def publish_all() -> None:
            for subject, payload in messages:
                await nc.publish(subject, payload)

        asyncio.run_coroutine_threadsafe(publish_all(), self._loop)

    def store_state(
        self, state: bytes, object_name: str, reply: str, answer: bytes, failed: Callable[[str], bytes]
    ) -> None:
        """Put the saved state (the file's bytes) into TWIN_STATES (created when missing) and answer `reply` with
        `answer`, or with `failed(reason)` when the store refuses; in the bus thread, so the run steps on."""
        assert self._nc is not None
        nc = self._nc

        async def store() -> None:
            try:
                js = nc.jetstream()
                try:
                    bucket = await js.object_store(TWIN_STATES_BUCKET)
                except BucketNotFoundError:
                    config = ObjectStoreConfig(bucket=TWIN_STATES_BUCKET, ttl=STATES_TTL_S, max_bytes=STATES_MAX_BYTES)
                    bucket = await js.create_object_store(TWIN_STATES_BUCKET, config=config)
                await bucket.put(object_name, state)
                data = answer
            except Exception as exc:
                data = failed(f"could not store the state: {exc!r}")
            if reply:
                await nc.publish(reply, data)

        asyncio.run_coroutine_threadsafe(store(), self._loop)

    def publish_stored(self, subject: str, payload: bytes, msg_id: str) -> None:
        """A JetStream publish (acknowledged, de-duplicated by `msg_id`), for results a reader must not miss."""
        assert self._nc is not None
        js = self._nc.jetstream()
        asyncio.run_coroutine_threadsafe(js.publish(subject, payload, headers={"Nats-Msg-Id": msg_id}), self._loop)

    def drain(self, wait_s: float = 0.0) -> list[Received]:
        """What has arrived; `wait_s`: wait that long for the first message if none has."""
        out = []
        if wait_s > 0:
            try:
                out.append(self.received.get(timeout=wait_s))
            except queue.Empty:
                return out
        while True:
            try:
                out.append(self.received.get_nowait())
            except queue.Empty:
                return out

    def close(self) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def twin_identity(keys_dir: Path | None) -> dict[str, str]:
    """The twin's bus credentials: its NKey seed from a local stack's key folder, else a user and
    password from the environment (a Kubernetes Secret), else none (a bus that checks no identity)."""
    if keys_dir is not None:
        return {"nkeys_seed": str(keys_dir / f"{TWIN_USER.name}.nk")}
    user, password = os.environ.get("ALMERE_NATS_USER"), os.environ.get("ALMERE_NATS_PASSWORD")
    return {"user": user, "password": password} if user and password else {}


def hold_until(deadline: float, bus: BusListener | None, apply: Callable[[str, bytes], None]) -> None:
    """Real time: hold the step until its wall-clock time (`time.monotonic`), applying decisions the
    moment they arrive (an incident's reroutes must not wait for the next step)."""
    while (left := deadline - time.monotonic()) > 0:
        if bus is None:
            time.sleep(left)
            return
        for subject, payload in bus.drain(wait_s=min(left, 0.01)):
            apply(subject, payload)
