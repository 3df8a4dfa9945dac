"""Transactional outbox: events are written in the same transaction as the change they describe,
then a relay publishes them to JetStream with their id as Nats-Msg-Id (so a retry after a crash is
de-duplicated by the stream) and deletes them once JetStream has acknowledged them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from google.protobuf.message import Message
from nats.aio.msg import Msg
from sqlalchemy import JSON, Engine, LargeBinary, delete, func, select
from sqlmodel import Field, SQLModel

from services.common import driver_sql, tracing
from services.common.bus import EVENT_TYPE_HEADER, MSG_ID_HEADER, Bus, OutgoingMessage
from services.common.clock import UtcDateTime
from services.common.db import begin_unsynced, writer, writer_lock
from services.common.errors import InvalidArgument
from services.common.observability import OUTBOX_BACKLOG, OUTBOX_PUBLISHED
from services.common.worker import Worker

log = logging.getLogger(__name__)


class OutboxBase(SQLModel):
    """Columns of a service's outbox table; each service declares its own table from this."""

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=36)
    subject: str = Field(max_length=255)
    event_type: str = Field(max_length=64)
    payload: bytes = Field(sa_type=LargeBinary)
    # NATS headers to publish with the event (the trace context of the call that caused it).
    headers: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    created_at: datetime = Field(sa_type=UtcDateTime)


# The columns an outbox row (outbox_row) sets.
OUTBOX_COLUMNS = ("event_id", "subject", "event_type", "payload", "headers", "created_at")
# Largest event the outbox accepts: below the streams' max_msg_size (64 KiB) with room for headers.
MAX_EVENT_BYTES = 60_000


def outbox_row(*, subject: str, event_type: str, message: Message, now: datetime) -> dict[str, Any]:
    """Values for one outbox row (for bulk insert). An event JetStream would refuse is refused here,
    in the writer's transaction, so it can never block the relay."""
    payload = message.SerializeToString()
    if len(payload) > MAX_EVENT_BYTES:
        raise InvalidArgument(f"the change makes a {len(payload)}-byte {event_type} event; at most {MAX_EVENT_BYTES}")
    return {
        "event_id": tracing.new_uuid4(),  # the Nats-Msg-Id: unique, not secret
        "subject": subject,
        "event_type": event_type,
        "payload": payload,
        "headers": tracing.outgoing_headers(),
        "created_at": now,
    }


class JetStreamPublisher:
    """Publishes messages with their ids and collects JetStream's acknowledgements on one inbox
    subscription of its own. nats-py's publish_async pays, per message, a semaphore, a future with a
    done callback, a JSON parse and a PubAck object, and asyncio.wait a callback per future: more
    than the relay's whole share of the outbox. Here an acknowledgement is a substring test."""

    def __init__(self, bus: Bus) -> None:
        self._nc = bus.nc
        self._prefix = ""
        self._round = 0
        self._acked: list[bool] = []
        self._unanswered = 0
        self._answered = asyncio.Event()

    async def publish(self, messages: Sequence[OutgoingMessage], ack_timeout: float = 5.0) -> list[bool]:
        """Publish with per-message ids; return which ones JetStream acknowledged."""
        if not self._prefix:
            self._prefix = self._nc.new_inbox() + "."
            await self._nc.subscribe(self._prefix + "*", cb=self._on_ack)
        self._round += 1
        reply = f"{self._prefix}{self._round}-"
        acked = self._acked = [False] * len(messages)
        sent = 0
        try:
            for m in messages:
                headers = {**m.headers, MSG_ID_HEADER: m.msg_id, EVENT_TYPE_HEADER: m.event_type}
                self._unanswered += 1
                await self._nc.publish(m.subject, m.payload, reply=f"{reply}{sent}", headers=headers)
                sent += 1
        except Exception as exc:  # disconnected: the rest stays in the outbox for the next attempt
            self._unanswered -= 1
            log.warning("publishing stopped after %d of %d messages: %s", sent, len(messages), exc)
        if self._unanswered > 0:  # (acknowledgements may have arrived while publishing)
            self._answered.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._answered.wait(), ack_timeout)
        self._acked, self._unanswered = [], 0  # answers still on their way belong to no round
        return acked

    async def _on_ack(self, msg: Msg) -> None:
        round_, _, index = msg.subject[len(self._prefix) :].partition("-")
        if int(round_) != self._round or not self._acked:
            return
        # An acknowledgement (also of a duplicate) is {"stream": ..., "seq": ...}; a refusal carries
        # "error", no responders an empty body with status 503.
        self._acked[int(index)] = msg.data[:1] == b"{" and b'"error"' not in msg.data
        self._unanswered -= 1
        if self._unanswered == 0:
            self._answered.set()


class OutboxRelay:
    """Publishes a service's outbox to JetStream, oldest first, woken after every commit, while `leads()`
    says this replica leads the relay: the replicas share the outbox table, and two relays taking the
    same rows would publish each event twice (JetStream drops the copy by its Nats-Msg-Id, so the
    overlap of a hand-over is harmless, but it must not be the rule). A follower's relay woken by its
    own commits `ring`s the leader's (services/common/relay_wake.py), whose next poll is the fallback."""

    def __init__(
        self,
        engine: Engine,
        *,
        table: type[OutboxBase],
        bus: Bus,
        service: str,
        leads: Callable[[], bool],
        ring: Callable[[], None] | None = None,
        batch: int = 1000,
        poll: float = 1.0,
    ) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._table: Any = table
        self._publisher = JetStreamPublisher(bus)
        self._service = service
        self._batch = batch
        self._leads = leads
        self._ring = ring  # blocking: wakes the leading replica's relay
        self._committed = False  # woken by a commit of this process (not by another replica's ring)
        # Plain tuples read and deleted by the driver (services/common/driver_sql.py): building a
        # SQLModel instance per event cost more than its query, and SQLAlchemy's execution nearly so.
        columns = table.__table__.c  # type: ignore[attr-defined]
        pending = [columns[n] for n in ("id", "event_id", "subject", "event_type", "payload", "headers")]
        self._pending = driver_sql.Statement(
            select(*pending).order_by(columns.id).limit(batch), params=[], columns=pending
        )
        self._published = driver_sql.KeyIn(lambda where: delete(self._table).where(where), key=columns.id)
        self._worker = Worker(f"{service}-outbox-relay", self._publish_all_pending, poll)

    def notify(self) -> None:
        """This process committed events."""
        self._committed = True
        self._worker.wake()

    def wake(self) -> None:
        """Another replica committed events (or this one now leads): publish, if leading."""
        self._worker.wake()

    def start(self) -> None:
        self._worker.start()

    async def stop(self) -> None:
        """Publish what is left (best effort), then stop."""
        await self._worker.stop()

    async def _publish_all_pending(self) -> None:
        committed, self._committed = self._committed, False
        if not self._leads():
            if committed and self._ring is not None:
                try:
                    await asyncio.to_thread(self._ring)
                except Exception as exc:  # the leader's poll publishes them all the same
                    log.warning("could not wake the leading relay: %r", exc)
            return
        try:
            while await self.publish_pending() == self._batch and self._leads():
                pass
        except Exception:
            log.warning("outbox relay could not publish; will retry", exc_info=True)

    async def publish_pending(self) -> int:
        """Publish one batch of pending rows; return how many were published."""
        rows = await asyncio.to_thread(self._fetch)
        if not rows:
            OUTBOX_BACKLOG.labels(self._service).set(0)
            return 0
        acked = await self._publisher.publish(
            [
                OutgoingMessage(
                    subject=subject, payload=payload, msg_id=event_id, event_type=kind, headers=headers or {}
                )
                for _, event_id, subject, kind, payload, headers in rows
            ]
        )
        done = [r[0] for r, ok in zip(rows, acked, strict=True) if ok]
        if done:
            await asyncio.to_thread(self._delete, done)
            OUTBOX_PUBLISHED.labels(self._service).inc(len(done))
        if len(done) < len(rows):
            raise RuntimeError(f"JetStream did not acknowledge {len(rows) - len(done)} of {len(rows)} events")
        return len(done)

    def _fetch(self) -> list[tuple[Any, ...]]:
        with self._engine.connect() as conn:
            rows = self._pending.fetch(conn, [])
            backlog = len(rows)
            if backlog == self._batch:
                backlog = conn.execute(select(func.count(self._table.id))).scalar_one()
            OUTBOX_BACKLOG.labels(self._service).set(backlog)
            return rows

    def _delete(self, ids: list[int]) -> None:
        with writer_lock(self._engine), self._writer.connect() as conn, begin_unsynced(conn):
            self._published.execute(conn, ids)
