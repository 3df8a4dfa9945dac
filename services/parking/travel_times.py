"""Network travel times for RecommendFacility, from the optimizer's live model (ComputeTravelTimes).
The parking service calls as itself (its own token, role `service:parking`) and names its caller in
`x-almere-on-behalf-of`: a caller's token never leaves the service it was sent to. Without an
optimizer, or when it does not answer, ranking falls back to walking distance."""

from __future__ import annotations

import logging

import grpc
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.optimizer.v1 import optimizer_pb2_grpc

from services.common.channels import open_channel
from services.common.config import Settings
from services.common.delegation import for_caller
from services.common.errors import InvalidArgument

log = logging.getLogger(__name__)
TIMEOUT_S = 2.0
MAX_FACILITIES = 200  # distinct destinations the optimizer answers in one call


class TravelTimes:
    def __init__(self, settings: Settings) -> None:
        address = settings.optimizer_address
        self._channel = open_channel(settings, address) if address else None
        self._stub = optimizer_pb2_grpc.OptimizerServiceStub(self._channel) if self._channel else None
        token = settings.service_token
        self._auth = (("authorization", f"Bearer {token}"),) if token else ()
        if self._stub is not None and not token:
            log.warning("no ALMERE_SERVICE_TOKEN: the optimizer will refuse travel-time questions")

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)

    async def drive_seconds(self, origin_edge: str, entrances: dict[str, str], caller: str) -> dict[str, float] | None:
        """Seconds from `origin_edge` to each facility's entrance edge ({facility: edge}) for
        `caller`; facilities the network cannot reach are left out. None: no optimizer to ask
        (walking distance decides)."""
        if self._stub is None or not entrances:
            return None
        if len(entrances) > MAX_FACILITIES:
            log.warning("%d facilities: more than one travel-time call answers; ranking by walking", len(entrances))
            return None
        facilities = sorted(entrances)
        request = opb.ComputeTravelTimesRequest(
            origin_edge_id=origin_edge, destination_edge_ids=[entrances[f] for f in facilities]
        )
        try:
            reply = await self._stub.ComputeTravelTimes(
                request, metadata=(*self._auth, for_caller(caller)), timeout=TIMEOUT_S
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.INVALID_ARGUMENT:  # the origin (destinations answer -1)
                raise InvalidArgument(err.details() or "origin_edge_id is not a road of the network") from err
            log.warning("no travel times from the optimizer (%s); ranking by walking distance", err.code().name)
            return None
        return {f: s for f, s in zip(facilities, reply.seconds, strict=True) if s >= 0}
