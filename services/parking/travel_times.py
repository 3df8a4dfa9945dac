"""Network travel times for RecommendFacility, from the optimizer's live model (ComputeTravelTimes).
The call carries the caller's own token (on behalf of the caller: no extra secret for the parking
service). Without an optimizer, or when it does not answer, ranking falls back to walking distance."""

from __future__ import annotations

import logging

import grpc
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.optimizer.v1 import optimizer_pb2_grpc

from services.common.errors import InvalidArgument

log = logging.getLogger(__name__)
TIMEOUT_S = 2.0
MAX_FACILITIES = 200  # distinct destinations the optimizer answers in one call


class TravelTimes:
    def __init__(self, address: str | None) -> None:
        self._channel = grpc.aio.insecure_channel(address) if address else None
        self._stub = optimizer_pb2_grpc.OptimizerServiceStub(self._channel) if self._channel else None

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)

    async def drive_seconds(
        self, origin_edge: str, entrances: dict[str, str], authorization: str
    ) -> dict[str, float] | None:
        """Seconds from `origin_edge` to each facility's entrance edge ({facility: edge}); facilities
        the network cannot reach are left out. None: no optimizer to ask (walking distance decides)."""
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
                request, metadata=(("authorization", authorization),), timeout=TIMEOUT_S
            )
        except grpc.aio.AioRpcError as err:
            if err.code() == grpc.StatusCode.INVALID_ARGUMENT:  # the origin (destinations answer -1)
                raise InvalidArgument(err.details() or "origin_edge_id is not a road of the network") from err
            log.warning("no travel times from the optimizer (%s); ranking by walking distance", err.code().name)
            return None
        return {f: s for f, s in zip(facilities, reply.seconds, strict=True) if s >= 0}
