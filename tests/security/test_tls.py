"""TLS configured for the servers is used by every client channel: the parking service asks the
optimizer for travel times over TLS, checked against the deployment's CA, as itself (its own token,
naming its caller for the optimizer's access log); a plain client, or one that does not trust the
CA, is refused. The CA and the certificate are made here."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import grpc
import pytest
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.optimizer.v1 import optimizer_pb2_grpc
from almere.parking.v1 import parking_pb2 as pb
from almere.type.v1 import geo_pb2

from services.common.channels import open_channel
from services.common.config import Settings
from services.optimizer.service import SPEC as OPTIMIZER
from services.parking.service import SPEC as PARKING
from sim.channels import open_channel as open_sim_channel
from sim.scenarios.almere_centrum import layout
from tests.integration.helpers import Parking
from tests.security.certificates import SERVER_NAME, Signer, issue, new_ca

WEST_IN = layout.edge_id("ext-w", "j02")


async def _refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    async with channel:
        stub = optimizer_pb2_grpc.OptimizerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.GetStatus(opb.GetStatusRequest(), timeout=3)
        return err.value.code()


async def test_parking_asks_the_optimizer_over_tls_as_itself(
    start_service: Callable[..., Awaitable[str]],
    settings: Settings,
    almere_net: Path,
    tokens: dict[str, str],
    tls: dict[str, object],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="almere.access")
    optimizer_at = await start_service(OPTIMIZER, network_file=almere_net, **tls)
    parking_at = await start_service(
        PARKING, optimizer_address=optimizer_at, service_token=tokens["parking_service"], **tls
    )
    client = settings.model_copy(update={"tls_ca_file": tls["tls_ca_file"], "tls_server_name": SERVER_NAME})
    async with open_channel(client, parking_at) as channel:
        parking = Parking(channel, tokens)
        for f in layout.FACILITIES[:3]:
            lat, lon = layout.position(*(int(c) for c in f.edge.split("-")[0][1:]))
            await parking.create(f.facility_id, capacity=f.capacity, entrance_edge_ids=[f.edge], lat=lat, lng=lon)
        lat, lon = layout.position(2.5, 2)
        ask = pb.RecommendFacilityRequest(
            destination=geo_pb2.LatLng(latitude=lat, longitude=lon), origin_edge_id=WEST_IN, max_walk_meters=3000
        )
        ranked = (await parking.as_("operator").RecommendFacility(ask)).recommendations
    # Drive times came from the optimizer, which only speaks TLS.
    assert len(ranked) == 3 and all(r.drive_seconds > 0 for r in ranked)
    # It was asked by the parking service (its own token), for the operator.
    asked = [r for r in caplog.records if getattr(r, "method", "").endswith("/ComputeTravelTimes")]
    assert [(r.caller, r.on_behalf_of, r.code) for r in asked] == [("parking_service", "operator", "OK")]  # type: ignore[attr-defined]

    # Plain text, or TLS without trusting the deployment's CA, or checking another name: refused.
    assert await _refused(grpc.aio.insecure_channel(optimizer_at)) == grpc.StatusCode.UNAVAILABLE
    untrusting = client.model_copy(update={"tls_ca_file": None})
    assert await _refused(open_channel(untrusting, optimizer_at)) == grpc.StatusCode.UNAVAILABLE
    other_name = client.model_copy(update={"tls_server_name": "elsewhere.almere.test"})
    assert await _refused(open_channel(other_name, optimizer_at)) == grpc.StatusCode.UNAVAILABLE


async def test_the_twin_reaches_a_tls_stack_with_what_endpoints_json_names(
    start_service: Callable[..., Awaitable[str]],
    almere_net: Path,
    tokens: dict[str, str],
    tls: dict[str, object],
    ca: Signer,
    tmp_path: Path,
) -> None:
    """The twin checks the services against the CA endpoints.json names and presents the
    certificate it names to services that require one (mutual TLS)."""
    mutual = {**tls, "tls_client_ca_file": tls["tls_ca_file"]}
    optimizer_at = await start_service(OPTIMIZER, network_file=almere_net, **mutual)
    auth = (("authorization", f"Bearer {tokens['sim']}"),)

    def status(endpoints: Mapping[str, object]) -> grpc.StatusCode:
        """The twin's blocking call (in a thread: the service runs on this test's event loop)."""
        with open_sim_channel(endpoints, "optimizer") as channel:
            try:
                # What the twin's navigation asks first (the equipped share).
                optimizer_pb2_grpc.OptimizerServiceStub(channel).GetStrategy(
                    opb.GetStrategyRequest(), metadata=auth, timeout=5
                )
            except grpc.RpcError as err:
                return err.code()
            return grpc.StatusCode.OK

    checked = {"ca_file": str(tls["tls_ca_file"]), "server_name": SERVER_NAME}
    cert_file, key_file = issue(tmp_path, "twin", ca)
    presented = {**checked, "cert_file": str(cert_file), "key_file": str(key_file)}
    assert await asyncio.to_thread(status, {"optimizer": optimizer_at, "tls": presented}) == grpc.StatusCode.OK
    assert await asyncio.to_thread(status, {"optimizer": optimizer_at, "tls": checked}) == grpc.StatusCode.UNAVAILABLE
    assert await asyncio.to_thread(status, {"optimizer": optimizer_at}) == grpc.StatusCode.UNAVAILABLE


async def test_a_delegation_header_counts_only_from_a_service(
    start_service: Callable[..., Awaitable[str]],
    almere_net: Path,
    tokens: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An engineer naming someone else in x-almere-on-behalf-of is logged as the engineer alone."""
    caplog.set_level(logging.INFO, logger="almere.access")
    optimizer_at = await start_service(OPTIMIZER, network_file=almere_net)
    ask = opb.ComputeTravelTimesRequest(origin_edge_id=WEST_IN, destination_edge_ids=[WEST_IN])
    async with grpc.aio.insecure_channel(optimizer_at) as channel:
        stub = optimizer_pb2_grpc.OptimizerServiceStub(channel)
        for caller in ("engineer", "parking_service"):
            metadata = (("authorization", f"Bearer {tokens[caller]}"), ("x-almere-on-behalf-of", "police"))
            await stub.ComputeTravelTimes(ask, metadata=metadata)
    asked = [r for r in caplog.records if getattr(r, "method", "").endswith("/ComputeTravelTimes")]
    assert [(r.caller, r.on_behalf_of) for r in asked] == [("engineer", None), ("parking_service", "police")]  # type: ignore[attr-defined]


async def test_mutual_tls_lets_in_only_callers_with_the_deployments_certificate(
    start_service: Callable[..., Awaitable[str]],
    settings: Settings,
    almere_net: Path,
    tokens: dict[str, str],
    tls: dict[str, object],
    ca: Signer,
    tmp_path: Path,
) -> None:
    """With a client CA configured, a server refuses a caller before any call: one without a
    certificate, or with one another CA signed, gets nowhere, token or not. Services present their
    own certificate on their channels, so the parking service still asks the optimizer."""
    ca_file = Path(str(tls["tls_ca_file"]))
    mutual = {**tls, "tls_client_ca_file": ca_file}
    optimizer_at = await start_service(OPTIMIZER, network_file=almere_net, **mutual)
    parking_at = await start_service(
        PARKING, optimizer_address=optimizer_at, service_token=tokens["parking_service"], **mutual
    )

    def client(name: str, signer: Signer) -> Settings:
        cert_file, key_file = issue(tmp_path, name, signer)
        update = {"tls_ca_file": ca_file, "tls_server_name": SERVER_NAME, "tls_cert_file": cert_file}
        return settings.model_copy(update={**update, "tls_key_file": key_file})

    no_certificate = settings.model_copy(update={"tls_ca_file": ca_file, "tls_server_name": SERVER_NAME})
    assert await _refused(open_channel(no_certificate, optimizer_at)) == grpc.StatusCode.UNAVAILABLE
    assert await _refused(open_channel(client("rogue-tool", new_ca()), optimizer_at)) == grpc.StatusCode.UNAVAILABLE

    async with open_channel(client("control-room", ca), parking_at) as channel:
        parking = Parking(channel, tokens)
        f = layout.FACILITIES[0]
        lat, lon = layout.position(*(int(c) for c in f.edge.split("-")[0][1:]))
        await parking.create(f.facility_id, capacity=f.capacity, entrance_edge_ids=[f.edge], lat=lat, lng=lon)
        ask = pb.RecommendFacilityRequest(
            destination=geo_pb2.LatLng(latitude=lat, longitude=lon), origin_edge_id=WEST_IN, max_walk_meters=3000
        )
        ranked = (await parking.as_("operator").RecommendFacility(ask)).recommendations
    assert ranked and ranked[0].drive_seconds > 0, "the parking service reached the optimizer with its own certificate"
