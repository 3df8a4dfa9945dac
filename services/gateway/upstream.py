"""The services behind the gateway, reached over gRPC: the parking and incident services. Calls carry
either the HTTP caller's own bearer token (its JSON and live views: the service checks its role and
cuts what it sees, exactly as for a gRPC client) or the gateway's own token of role `public` (the
open-data feeds: what anybody may see)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.incidents.v1 import incidents_pb2_grpc
from almere.parking.v1 import parking_pb2 as ppb
from almere.parking.v1 import parking_pb2_grpc

from services.common.channels import open_channel
from services.common.config import Settings

Metadata = tuple[tuple[str, str], ...]
PAGE = 1000  # the services' largest page


def bearer(authorization: str) -> Metadata:
    return (("authorization", authorization),)


@dataclass(kw_only=True)
class Upstream:
    parking: parking_pb2_grpc.ParkingServiceAsyncStub
    incidents: incidents_pb2_grpc.IncidentServiceAsyncStub
    # The gateway's own token (role public), for the open-data feeds.
    public: Metadata
    max_items: int
    # By service short name (transcoding.SERVICES): parking and incidents always, signals, the
    # optimizer, the what-if service, the partner registry and the counters when their addresses are
    # configured.
    channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    # The same services on connections of their own for Watch streams: a server takes a limited
    # number of streams per connection (256), and long-lived watches must not queue the feeds'
    # and the operators' calls behind them.
    stream_channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)

    @classmethod
    def connect(cls, settings: Settings) -> Upstream:
        if not (settings.parking_address and settings.incidents_address):
            raise ValueError("the gateway needs ALMERE_PARKING_ADDRESS and ALMERE_INCIDENTS_ADDRESS")
        if not settings.service_token:
            raise ValueError("the gateway needs its own token (ALMERE_SERVICE_TOKEN, role public) for its feeds")
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        addresses = {
            "parking": settings.parking_address,
            "incidents": settings.incidents_address,
            "signals": settings.signals_address,
            "optimizer": settings.optimizer_address,
            "whatif": settings.whatif_address,
            "partners": settings.partners_address,
            "counters": settings.counters_address,
        }
        channels = {name: open_channel(settings, a, options) for name, a in addresses.items() if a}
        own = [*options, ("grpc.use_local_subchannel_pool", 1)]  # else gRPC shares the connection
        streams = {name: open_channel(settings, a, own) for name, a in addresses.items() if a}
        return cls(
            parking=parking_pb2_grpc.ParkingServiceStub(channels["parking"]),
            incidents=incidents_pb2_grpc.IncidentServiceStub(channels["incidents"]),
            public=bearer(f"Bearer {settings.service_token}"),
            max_items=settings.gateway_max_items,
            channels=channels,
            stream_channels=streams,
        )

    async def close(self) -> None:
        for channel in [*self.channels.values(), *self.stream_channels.values()]:
            await channel.close(None)

    async def all_facilities(self, metadata: Metadata) -> list[ppb.Facility]:
        """Every facility (with its occupancy) the caller may see, up to max_items."""
        facilities: list[ppb.Facility] = []
        token = ""
        while len(facilities) < self.max_items:
            page = await self.parking.ListFacilities(
                ppb.ListFacilitiesRequest(page_size=PAGE, page_token=token), metadata=metadata, timeout=10
            )
            facilities.extend(page.facilities)
            token = page.next_page_token
            if not token:
                break
        return facilities[: self.max_items]

    async def all_incidents(
        self, metadata: Metadata, *, states: Sequence[int] = (), types: Sequence[int] = ()
    ) -> list[ipb.Incident]:
        incidents: list[ipb.Incident] = []
        token = ""
        while len(incidents) < self.max_items:
            page = await self.incidents.ListIncidents(
                ipb.ListIncidentsRequest(page_size=PAGE, page_token=token, states=states, types=types),  # type: ignore[arg-type]
                metadata=metadata,
                timeout=10,
            )
            incidents.extend(page.incidents)
            token = page.next_page_token
            if not token:
                break
        return incidents[: self.max_items]

    async def public_incidents(self) -> list[ipb.Incident]:
        """What the incident service shows the public: confirmed, not over, no police actions."""
        return await self.all_incidents(self.public)
