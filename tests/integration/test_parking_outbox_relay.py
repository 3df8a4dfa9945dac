"""The relay's JetStream publisher on a real nats-server: it reports, per message, whether JetStream
stored it (a duplicate counts: it is stored), and never an answer it did not get."""

from __future__ import annotations

from apps.natsd import NatsServer
from contract.bus import DEFAULT_LIMITS, PARKING
from services.common.bus import Bus, OutgoingMessage
from services.common.config import Settings
from services.common.outbox import JetStreamPublisher


def _message(subject: str, msg_id: str) -> OutgoingMessage:
    return OutgoingMessage(subject=subject, payload=b"x", msg_id=msg_id, event_type="test", headers={})


async def test_acknowledged_duplicate_and_unstored_messages_are_told_apart(nats_server: NatsServer) -> None:
    settings = Settings(nats_url=nats_server.url, nats_nkey_seed_file=nats_server.keys["parking"].seed_file)
    bus = await Bus.connect(settings, "parking")
    try:
        await bus.ensure_stream(PARKING.config(DEFAULT_LIMITS))
        publisher = JetStreamPublisher(bus)
        stored = PARKING.subject("occupancy_changed", "garage-a")
        first = await publisher.publish([_message(stored, f"id-{i}") for i in range(50)])
        again = await publisher.publish([_message(stored, "id-7"), _message(stored, "id-50")])
        # Outside its permissions: the server refuses it and nobody answers; not acknowledged.
        unstored = await publisher.publish([_message("almere.nowhere.v1.x.y", "id-51")], ack_timeout=1.0)
    finally:
        await bus.close()
    assert first == [True] * 50
    assert again == [True, True]
    assert unstored == [False]
