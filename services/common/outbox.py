"""Transactional outbox: events are written in the same transaction as the change they describe,
then a relay publishes them to JetStream with their id as Nats-Msg-Id (so a retry after a crash is
de-duplicated by the stream) and deletes them once JetStream has acknowledged them."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import datetime
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import JSON, Engine, LargeBinary, delete, func, select
from sqlmodel import Field, Session, SQLModel

from services.common import tracing
from services.common.bus import Bus, OutgoingMessage
from services.common.clock import UtcDateTime
from services.common.db import writer
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


# Largest event the outbox accepts: below the streams' max_msg_size (64 KiB) with room for headers.
MAX_EVENT_BYTES = 60_000


def outbox_row(*, subject: str, event_type: str, message: Message, now: datetime) -> dict[str, Any]:
    """Values for one outbox row (for bulk insert). An event JetStream would refuse is refused here,
    in the writer's transaction, so it can never block the relay."""
    payload = message.SerializeToString()
    if len(payload) > MAX_EVENT_BYTES:
        raise InvalidArgument(f"the change makes a {len(payload)}-byte {event_type} event; at most {MAX_EVENT_BYTES}")
    return {
        "event_id": str(uuid.uuid4()),
        "subject": subject,
        "event_type": event_type,
        "payload": payload,
        "headers": tracing.outgoing_headers(),
        "created_at": now,
    }


class OutboxRelay:
    """Publishes a service's outbox to JetStream, oldest first, woken after every commit."""

    def __init__(
        self,
        engine: Engine,
        *,
        table: type[OutboxBase],
        bus: Bus,
        service: str,
        batch: int = 1000,
        poll: float = 1.0,
    ) -> None:
        self._engine = engine
        self._table: Any = table
        self._bus = bus
        self._service = service
        self._batch = batch
        self._worker = Worker(f"{service}-outbox-relay", self._publish_all_pending, poll)

    def notify(self) -> None:
        self._worker.wake()

    def start(self) -> None:
        self._worker.start()

    async def stop(self) -> None:
        """Publish what is left (best effort), then stop."""
        await self._worker.stop()

    async def _publish_all_pending(self) -> None:
        try:
            while await self.publish_pending() == self._batch:
                pass
        except Exception:
            log.warning("outbox relay could not publish; will retry", exc_info=True)

    async def publish_pending(self) -> int:
        """Publish one batch of pending rows; return how many were published."""
        rows = await asyncio.to_thread(self._fetch)
        if not rows:
            OUTBOX_BACKLOG.labels(self._service).set(0)
            return 0
        acked = await self._bus.publish_all(
            [
                OutgoingMessage(
                    subject=r.subject,
                    payload=r.payload,
                    msg_id=r.event_id,
                    event_type=r.event_type,
                    headers=r.headers or {},
                )
                for r in rows
            ]
        )
        done = [r.id for r, ok in zip(rows, acked, strict=True) if ok]
        if done:
            await asyncio.to_thread(self._delete, done)
            OUTBOX_PUBLISHED.labels(self._service).inc(len(done))
        if len(done) < len(rows):
            raise RuntimeError(f"JetStream did not acknowledge {len(rows) - len(done)} of {len(rows)} events")
        return len(done)

    def _fetch(self) -> list[Any]:
        with Session(self._engine) as session:
            rows = list(session.execute(select(self._table).order_by(self._table.id).limit(self._batch)).scalars())
            backlog = len(rows)
            if backlog == self._batch:
                backlog = session.execute(select(func.count(self._table.id))).scalar_one()
            OUTBOX_BACKLOG.labels(self._service).set(backlog)
            return rows

    def _delete(self, ids: list[int]) -> None:
        with Session(writer(self._engine)) as session, session.begin():
            session.execute(delete(self._table).where(self._table.id.in_(ids)))
