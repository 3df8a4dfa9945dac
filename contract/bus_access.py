"""Who may do what on the bus: one NATS user per process, with subject permissions.

Each process connects with its own NKey (an Ed25519 key pair: the server holds only public keys, the
seed never crosses the wire, the server's nonce is signed). A user publishes only its own streams'
subjects, reads only the streams it consumes, and gets replies on an inbox prefix of its own, so no
user can read another's JetStream deliveries. Anonymous connections are refused.

The JetStream API is reached through subjects, so the permissions name the API calls each user
makes: stream info/create (and update for the streams it owns), consumer create/info/next on the
streams it reads, acks and flow control on those streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from contract.bus import (
    COUNTS,
    DETECTORS,
    INCIDENTS,
    OPTIMIZER,
    PARKING,
    PARTNER_ACCESS,
    PARTNERS,
    SIGNALS,
    TWIN_STATE_REQUEST,
    TWIN_STATES_BUCKET,
    WHATIF_RESULTS,
    WHATIF_RUNS,
    Stream,
)

JS_API = "$JS.API"
# The object store bucket of the twin's saved states is a JetStream stream (chunks under C., metadata
# under M.): the twin writes it, the what-if workers read it.
TWIN_STATES = Stream(name=f"OBJ_{TWIN_STATES_BUCKET}", prefix=f"$O.{TWIN_STATES_BUCKET}")


@dataclass(frozen=True, kw_only=True)
class BusUser:
    """One identity on the bus and what it may touch."""

    name: str
    # Streams whose subjects it publishes and whose configuration it keeps.
    owns: tuple[Stream, ...] = ()
    # Streams whose configuration it keeps without publishing into them.
    keeps: tuple[Stream, ...] = ()
    # Streams it publishes into without owning them (a field device's measurements).
    feeds: tuple[Stream, ...] = ()
    # Streams it reads through JetStream consumers (durable or ordered).
    consumes: tuple[Stream, ...] = ()
    # Core subjects it subscribes to live (the twin's grants and guidance).
    listens: tuple[str, ...] = ()
    # Object store buckets (their streams) it writes: put reads the old metadata and purges old chunks.
    stores: tuple[Stream, ...] = ()
    # Core subjects it publishes to outside any stream (requests, replies to others' inboxes).
    publishes: tuple[str, ...] = ()

    @property
    def inbox_prefix(self) -> str:
        """Replies (publish acks, consumer deliveries, API answers) come here and to no one else."""
        return f"_INBOX_{self.name}"

    def permissions(self) -> dict[str, Any]:
        """The user's permissions in nats-server's configuration format."""
        publish = [f"{JS_API}.INFO"]
        subscribe = [f"{self.inbox_prefix}.>"]
        for stream in self.owns:
            publish += [stream.subjects, *_stream_api(stream, update=True)]
            subscribe.append(stream.subjects)  # the Watch feeds of the owner's replicas
        for stream in self.keeps:
            publish += _stream_api(stream, update=True)
        for stream in self.feeds:
            publish += [stream.subjects, *_stream_api(stream, update=False)]
        for stream in self.consumes:
            publish += [*_stream_api(stream, update=False), *_consumer_api(stream)]
        for stream in self.stores:
            name = stream.name
            publish += [stream.subjects, *_stream_api(stream, update=True)]
            publish += [f"{JS_API}.STREAM.MSG.GET.{name}", f"{JS_API}.STREAM.PURGE.{name}"]
        if TWIN_STATES in (*self.consumes, *self.stores):
            # nats-py finds an object store's stream by its subject (the names only, no contents).
            publish.append(f"{JS_API}.STREAM.NAMES")
        publish += self.publishes
        subscribe += self.listens
        return {"publish": {"allow": _unique(publish)}, "subscribe": {"allow": _unique(subscribe)}}


def _stream_api(stream: Stream, *, update: bool) -> list[str]:
    # Whoever starts first creates a stream; only its owner brings it to new limits.
    calls = ["INFO", "CREATE", *(["UPDATE"] if update else [])]
    return [f"{JS_API}.STREAM.{call}.{stream.name}" for call in calls]


def _consumer_api(stream: Stream) -> list[str]:
    name = stream.name
    return [
        f"{JS_API}.CONSUMER.CREATE.{name}",  # an ephemeral consumer without a name (ordered)
        f"{JS_API}.CONSUMER.CREATE.{name}.>",
        f"{JS_API}.CONSUMER.DURABLE.CREATE.{name}.>",
        f"{JS_API}.CONSUMER.INFO.{name}.>",
        f"{JS_API}.CONSUMER.DELETE.{name}.>",  # an ordered consumer replaces its ephemeral consumer
        f"{JS_API}.CONSUMER.MSG.NEXT.{name}.>",
        f"{JS_API}.STREAM.MSG.GET.{name}",  # one stored message: the last state of a subject
        f"$JS.ACK.{name}.>",
        f"$JS.FC.{name}.>",
    ]


def _unique(subjects: list[str]) -> list[str]:
    return list(dict.fromkeys(subjects))


# Every service follows the partners' agreements and suspensions (PARTNERS) and audits the reads of
# their data (PARTNER_ACCESS), whatever it serves.
PARKING_USER = BusUser(name="parking", owns=(PARKING,), consumes=(PARTNERS,), feeds=(PARTNER_ACCESS,))
INCIDENTS_USER = BusUser(name="incidents", owns=(INCIDENTS,), consumes=(PARTNERS,), feeds=(PARTNER_ACCESS,))
SIGNALS_USER = BusUser(name="signals", owns=(SIGNALS,), consumes=(PARTNERS,), feeds=(PARTNER_ACCESS,))
COUNTERS_USER = BusUser(name="counters", owns=(COUNTS,), consumes=(PARTNERS,), feeds=(PARTNER_ACCESS,))
# The optimizer keeps the DETECTORS stream: it is its only reader, and field devices only publish.
OPTIMIZER_USER = BusUser(
    name="optimizer",
    owns=(OPTIMIZER,),
    keeps=(DETECTORS,),
    consumes=(PARKING, INCIDENTS, SIGNALS, DETECTORS, COUNTS, PARTNERS),
    feeds=(PARTNER_ACCESS,),
)
# The twin plays the street's detector stations and reads what the street's devices would receive:
# signal plans in force, priority grants and the optimizer's guidance.
# What-if runs: the twin saves its state when the what-if service asks (only it may: no other user
# may publish to TWIN_STATE_REQUEST), answers on the service's inbox and reports what it observed.
WHATIF_USER = BusUser(
    name="whatif",
    owns=(WHATIF_RUNS,),
    keeps=(WHATIF_RESULTS,),
    consumes=(WHATIF_RESULTS, DETECTORS, PARTNERS),
    feeds=(PARTNER_ACCESS,),
    publishes=(TWIN_STATE_REQUEST,),
)
# The partner registry: partners' state and the agreements in force, for the services that hold
# partners' data.
PARTNERS_USER = BusUser(
    name="partners",
    owns=(PARTNERS,),
    keeps=(PARTNER_ACCESS,),
    consumes=(PARTNERS, PARTNER_ACCESS),
    feeds=(PARTNER_ACCESS,),
)
WHATIF_WORKER_USER = BusUser(name="whatif-worker", consumes=(WHATIF_RUNS, TWIN_STATES), feeds=(WHATIF_RESULTS,))
TWIN_USER = BusUser(
    name="twin",
    feeds=(DETECTORS, WHATIF_RESULTS),
    consumes=(SIGNALS,),
    listens=(SIGNALS.subjects, OPTIMIZER.subjects, TWIN_STATE_REQUEST),
    stores=(TWIN_STATES,),
    publishes=(f"{WHATIF_USER.inbox_prefix}.>",),
)
# Read-only: operators' tools, the demo's transcript, tests. Restricted fields never travel on the
# bus (see the incident events), so reading every stream reveals nothing a service keeps back.
OBSERVER_USER = BusUser(
    name="observer",
    consumes=(PARKING, INCIDENTS, SIGNALS, OPTIMIZER, DETECTORS, COUNTS, PARTNERS),
    listens=("almere.>",),
)

SERVICE_USERS = {
    u.name: u
    for u in (
        PARKING_USER,
        INCIDENTS_USER,
        SIGNALS_USER,
        COUNTERS_USER,
        OPTIMIZER_USER,
        WHATIF_USER,
        WHATIF_WORKER_USER,
        PARTNERS_USER,
    )
}
USERS = {**SERVICE_USERS, TWIN_USER.name: TWIN_USER, OBSERVER_USER.name: OBSERVER_USER}
