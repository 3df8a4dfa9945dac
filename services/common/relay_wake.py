"""Wakes the relay of the replica that leads it when another replica commits, over PostgreSQL's
LISTEN/NOTIFY: without it a follower's events would wait for the leader's next poll (up to a second).

Every relay listens on one channel per (schema, service); a follower whose relay is woken by its
own commit rings it once (commits arriving meanwhile share the ring). A lost ring costs only that
wait: the leader still polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from psycopg import sql
from sqlalchemy import Connection, Engine, NullPool, create_engine, text

log = logging.getLogger(__name__)

LISTEN_WAIT_S = 0.2  # how often the listener checks it should stop (a stop waits for it)
RECONNECT_S = 1.0


class RelayWake:
    def __init__(self, engine: Engine, *, service: str) -> None:
        self._engine = engine
        self._service = service
        self._channel = ""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def ring(self) -> None:
        """Wake every replica's relay (blocking: call it off the event loop)."""
        with self._engine.connect() as conn:
            conn.execute(text("SELECT pg_notify(:channel, '')"), {"channel": self._channel_of(conn)})
            conn.commit()

    def start(self, woken: Callable[[], None]) -> None:
        """Call `woken` on this event loop whenever a replica rings."""
        loop = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._listen, args=(loop, woken), name=f"{self._service}-relay-wake", daemon=True
        )
        self._thread.start()

    async def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    def _listen(self, loop: asyncio.AbstractEventLoop, woken: Callable[[], None]) -> None:
        listener = create_engine(self._engine.url, poolclass=NullPool)  # a connection of its own
        while not self._stopping.is_set():
            try:
                with listener.connect() as conn:
                    conn.execution_options(isolation_level="AUTOCOMMIT")
                    channel = self._channel_of(conn)
                    raw: Any = conn.connection.driver_connection  # psycopg's, for notifies()
                    raw.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    while not self._stopping.is_set():
                        for _ in raw.notifies(timeout=LISTEN_WAIT_S):
                            loop.call_soon_threadsafe(woken)
            except Exception as exc:
                log.warning("%s: listening for relay wake-ups failed (%r); retrying", self._service, exc)
                self._stopping.wait(RECONNECT_S)
        with contextlib.suppress(Exception):
            listener.dispose()

    def _channel_of(self, conn: Connection) -> str:
        """One channel per schema and service (NOTIFY channels are per database, schemas are not)."""
        if not self._channel:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            digest = hashlib.sha256(f"{schema}/{self._service}".encode()).hexdigest()[:16]
            self._channel = f"almere_outbox_{digest}"
        return self._channel
