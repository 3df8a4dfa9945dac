"""OptimizerService with real NATS, a real database and the other services: it learns facilities and
incidents from their streams, decides from vehicle reports, checks its callers, and resumes after a
restart from its durable consumers without losing or repeating a decision."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.optimizer.v1 import decisions_pb2 as dpb
from almere.optimizer.v1 import optimizer_pb2 as pb
from almere.optimizer.v1 import optimizer_pb2_grpc
from google.protobuf.field_mask_pb2 import FieldMask

from apps.natsd import NatsServer
from services.common.config import Settings
from services.common.runtime import Service
from services.optimizer.routing import RoadGraph
from services.optimizer.service import SPEC
from sim.scenarios.almere_centrum import layout
from tests.integration.helpers import Client, Incidents, Parking, Partners, read_stream

WEST_IN = layout.edge_id("ext-w", "j02")
EAST_OUT = layout.edge_id("j52", "ext-e")
COLLISION = layout.edge_id("j22", "j32")
SECOND = layout.edge_id("j32", "j42")
FORUM = next(f for f in layout.FACILITIES if f.facility_id == "garage-forum")


class Optimizer(Client):
    def __init__(self, channel: grpc.aio.Channel, tokens: dict[str, str]) -> None:
        super().__init__(optimizer_pb2_grpc.OptimizerServiceStub(channel), tokens)


@pytest.fixture
async def optimizer(
    start_service: Callable[..., Awaitable[str]], almere_net: Path, tokens: dict[str, str]
) -> AsyncIterator[Optimizer]:
    address = await start_service(SPEC, network_file=almere_net)
    async with grpc.aio.insecure_channel(address) as channel:
        yield Optimizer(channel, tokens)


def _through(almere_net: Path, n: int) -> list[pb.VehicleState]:
    route = RoadGraph.from_net(almere_net).route_many([WEST_IN], [EAST_OUT], RoadGraph.from_net(almere_net).free_time)[
        0
    ]
    assert route and COLLISION in route and SECOND in route
    return [pb.VehicleState(vehicle_id=f"r1:v{i}", edge_id=WEST_IN, route=route) for i in range(n)]


async def _until(check: Callable[[], Awaitable[Any]], what: str, within_s: float = 15) -> Any:
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _code(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), err.value.details() or ""


async def test_bad_reports_and_callers_get_clear_status_and_change_nothing(
    optimizer: Optimizer, almere_net: Path
) -> None:
    vehicles = _through(almere_net, 2)
    code, message = await _code(optimizer.as_("operator").ReportVehicles(pb.ReportVehiclesRequest(vehicles=vehicles)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    lost = pb.VehicleState(vehicle_id="r1:lost", edge_id="no-such-road")
    code, message = await _code(
        optimizer.as_("sim").ReportVehicles(pb.ReportVehiclesRequest(vehicles=[*vehicles, lost]))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no-such-road" in message
    twice = pb.ReportVehiclesRequest(vehicles=[vehicles[0], vehicles[0]])
    code, message = await _code(optimizer.as_("sim").ReportVehicles(twice))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "twice" in message
    bad_id = pb.VehicleState(vehicle_id="has.dots", edge_id=WEST_IN)
    code, _ = await _code(optimizer.as_("sim").ReportVehicles(pb.ReportVehiclesRequest(vehicles=[bad_id])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    status = await optimizer.as_("engineer").GetStatus(pb.GetStatusRequest())
    assert status.vehicles == 0, "a refused report changed the picture"

    code, _ = await _code(optimizer.as_("sim").SetStrategy(pb.SetStrategyRequest(strategy=pb.Strategy())))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    too_fast = pb.SetStrategyRequest(
        strategy=pb.Strategy(decision_interval_seconds=1), update_mask=FieldMask(paths=["decision_interval_seconds"])
    )
    code, message = await _code(optimizer.as_("engineer").SetStrategy(too_fast))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "decision_interval_seconds" in message
    unknown = pb.SetStrategyRequest(update_mask=FieldMask(paths=["speed_of_light"]))
    code, _ = await _code(optimizer.as_("engineer").SetStrategy(unknown))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    off = pb.SetStrategyRequest(
        strategy=pb.Strategy(parking_guidance=False), update_mask=FieldMask(paths=["parking_guidance"])
    )
    changed = (await optimizer.as_("engineer").SetStrategy(off)).strategy
    assert not changed.parking_guidance and changed.incident_rerouting and changed.decision_interval_seconds == 30
    assert (await optimizer.as_("sim").GetStrategy(pb.GetStrategyRequest())).strategy == changed

    times = await optimizer.as_("engineer").ComputeTravelTimes(
        pb.ComputeTravelTimesRequest(origin_edge_id=WEST_IN, destination_edge_ids=[EAST_OUT, FORUM.edge])
    )
    assert all(60 < t < 600 for t in times.seconds)
    code, _ = await _code(optimizer.as_("engineer").GetNetworkState(pb.GetNetworkStateRequest(edge_ids=["nowhere"])))
    assert code == grpc.StatusCode.INVALID_ARGUMENT


async def _decisions(server: NatsServer, reader: str) -> list[dpb.Decision]:
    read = await read_stream(server, "almere.optimizer.v1.>", reader, idle=0.3, stream="OPTIMIZER")
    return [decision for _, decision in read]


async def _police(incidents: Incidents, edge: str) -> ipb.Incident:
    impact = ipb.Impact(closed_lanes=[1], speed_limit_kmh=5)
    reported = await incidents.report(
        network_location=ipb.NetworkLocation(edge_id=edge, lane_indices=[1]), impact=impact
    )
    await incidents.as_("police").TransitionIncident(
        ipb.TransitionIncidentRequest(name=reported.name, state=ipb.INCIDENT_STATE_ACTIVE, reason="on site")
    )
    return reported


async def test_closed_loop_through_the_services_survives_a_restart(
    settings: Settings,
    start_service: Callable[..., Awaitable[str]],
    almere_net: Path,
    nats_server: NatsServer,
    tokens: dict[str, str],
) -> None:
    from services.incidents.service import SPEC as INCIDENTS
    from services.parking.service import SPEC as PARKING

    parking_at = await start_service(PARKING)
    incidents_at = await start_service(INCIDENTS, network_file=almere_net)
    optimizer_settings = settings.model_copy(
        update={"network_file": almere_net, "nats_nkey_seed_file": nats_server.keys["optimizer"].seed_file}
    )
    service = Service(SPEC, optimizer_settings)
    port = await service.start(port=0)
    vehicles = _through(almere_net, 12)
    async with (
        grpc.aio.insecure_channel(parking_at) as p,
        grpc.aio.insecure_channel(incidents_at) as i,
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as o,
    ):
        parking, incidents, optimizer = Parking(p, tokens), Incidents(i, tokens), Optimizer(o, tokens)
        await parking.create("garage-forum", capacity=50, entrance_edge_ids=[FORUM.edge])

        async def knows_forum() -> bool:
            state = await optimizer.as_("engineer").GetNetworkState(pb.GetNetworkStateRequest())
            return any(f.facility_id == "garage-forum" and f.edge_id == FORUM.edge for f in state.facilities)

        await _until(knows_forum, "the optimizer to learn the facility from the PARKING stream")
        await optimizer.as_("sim").ReportVehicles(pb.ReportVehiclesRequest(vehicles=vehicles, sim_time_seconds=30))
        first = await _police(incidents, COLLISION)

        async def rerouted() -> list[dpb.Decision]:
            found = await _decisions(nats_server, f"reader-{uuid.uuid4().hex}")
            return found if len(found) >= len(vehicles) else []

        # The police report alone (no travel time shows it yet) reroutes every vehicle heading there.
        decided = await _until(rerouted, "route advice for every vehicle heading into the collision")
        assert {d.route_advice.vehicle_id for d in decided} == {v.vehicle_id for v in vehicles}
        assert all(COLLISION not in d.route_advice.edges for d in decided)
        assert all(d.trigger["incident"] == first.name and d.lever == dpb.LEVER_INCIDENT_REROUTING for d in decided)
        edge = (await optimizer.as_("engineer").GetNetworkState(pb.GetNetworkStateRequest(edge_ids=[COLLISION]))).edges[
            0
        ]
        assert edge.travel_time_seconds > 150 and edge.incidents == [first.name]

        await service.stop()  # the optimizer goes down; the city goes on
        second = await _police(incidents, SECOND)
        service = Service(SPEC, optimizer_settings)
        port = await service.start(port=0)

    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as o:
        optimizer = Optimizer(o, tokens)

        async def knows_second() -> bool:
            state = await optimizer.as_("engineer").GetNetworkState(pb.GetNetworkStateRequest(edge_ids=[SECOND]))
            return state.edges[0].incidents == [second.name]

        await _until(knows_second, "the second incident, reported while the optimizer was down")
        state = await optimizer.as_("engineer").GetNetworkState(pb.GetNetworkStateRequest(edge_ids=[COLLISION]))
        assert state.edges[0].incidents == [first.name], "the first incident was forgotten in the restart"
        # The same vehicles, still on their old routes: answered for the second incident only.
        reply = await optimizer.as_("sim").ReportVehicles(
            pb.ReportVehiclesRequest(vehicles=vehicles, sim_time_seconds=60)
        )
        assert {d.trigger["incident"] for d in reply.decisions} == {second.name}
        assert len(reply.decisions) == len(vehicles)
        assert all(
            SECOND not in d.route_advice.edges and COLLISION not in d.route_advice.edges for d in reply.decisions
        )
        await service.stop()

    everything = await _decisions(nats_server, "final-reader")
    per_cause = Counter((d.route_advice.vehicle_id, d.trigger["incident"]) for d in everything)
    assert len(everything) == 2 * len(vehicles) and set(per_cause.values()) == {1}, "a decision was lost or repeated"
    assert len({d.name for d in everything}) == len(everything)


async def test_recommend_facility_ranks_by_the_optimizers_travel_times(
    start_service: Callable[..., Awaitable[str]], almere_net: Path, tokens: dict[str, str]
) -> None:
    from almere.parking.v1 import parking_pb2 as ppb
    from almere.type.v1 import geo_pb2

    from services.parking.service import SPEC as PARKING

    optimizer_at = await start_service(SPEC, network_file=almere_net)
    parking_at = await start_service(PARKING, optimizer_address=optimizer_at, service_token=tokens["parking_service"])
    async with grpc.aio.insecure_channel(parking_at) as channel:
        parking = Parking(channel, tokens)
        for f in layout.FACILITIES[:4]:
            lat, lon = layout.position(*(int(c) for c in f.edge.split("-")[0][1:]))
            await parking.create(f.facility_id, capacity=f.capacity, entrance_edge_ids=[f.edge], lat=lat, lng=lon)
        lat, lon = layout.position(2.5, 2)
        ask = ppb.RecommendFacilityRequest(
            destination=geo_pb2.LatLng(latitude=lat, longitude=lon), origin_edge_id=WEST_IN, max_walk_meters=3000
        )
        ranked = (await parking.as_("operator").RecommendFacility(ask)).recommendations
        assert len(ranked) == 4 and all(60 < r.drive_seconds < 900 for r in ranked)
        assert [r.score for r in ranked] == sorted(r.score for r in ranked)
        for r in ranked:  # seconds: the drive, the walk along streets, and the (here unknown) fill
            walk_s = (1.2 * r.walk_meters + 1000 * 0.9**4) / 1.3
            assert r.score == pytest.approx(r.drive_seconds + walk_s, rel=1e-6)
        ask.origin_edge_id = "no-such-road"
        code, message = await _code(parking.as_("operator").RecommendFacility(ask))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "origin_edge_id" in message
        # Without an origin the ranking stays by walking distance (no drive times).
        ask.ClearField("origin_edge_id")
        assert all(r.drive_seconds == 0 for r in (await parking.as_("operator").RecommendFacility(ask)).recommendations)


async def test_watch_decisions_streams_each_decision_with_its_reason_and_trigger(
    optimizer: Optimizer, almere_net: Path
) -> None:
    vehicles = _through(almere_net, 3)
    only_incidents = optimizer.as_("police").WatchDecisions(
        pb.WatchDecisionsRequest(levers=[dpb.LEVER_INCIDENT_REROUTING])
    )
    everything = optimizer.as_("engineer").WatchDecisions(pb.WatchDecisionsRequest())
    await asyncio.sleep(0.3)  # both watches subscribed
    # A jam on the Stadsdreef, measured by the vehicles themselves: congestion rerouting, no incident.
    jam = [pb.EdgeTravelTime(edge_id=COLLISION, travel_time_seconds=1500)] * 8
    reply = await optimizer.as_("sim").ReportVehicles(
        pb.ReportVehiclesRequest(vehicles=vehicles, edge_travel_times=jam, sim_time_seconds=30)
    )
    assert len(reply.decisions) == 3
    seen = [(await asyncio.wait_for(everything.read(), 10)).decision for _ in reply.decisions]
    assert {d.name for d in seen} == {d.name for d in reply.decisions}
    first = seen[0]
    assert first.lever == dpb.LEVER_CONGESTION_REROUTING and "faster" in first.reason
    assert float(first.trigger["route_seconds"]) > float(first.trigger["new_route_seconds"]) + 30
    with pytest.raises(asyncio.TimeoutError):  # the incident-only watcher saw none of them
        await asyncio.wait_for(only_incidents.read(), 1)
    everything.cancel()
    only_incidents.cancel()
    code, _ = await _code(optimizer.as_("operator").GetStatus(pb.GetStatusRequest()))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    status = await optimizer.as_("engineer").GetStatus(pb.GetStatusRequest())
    assert status.vehicles == 3 and status.decisions["LEVER_CONGESTION_REROUTING"] == 3
    assert status.last_sim_time_seconds == 30


async def test_the_network_state_shows_a_partners_garage_as_its_agreement_allows(
    start_service: Callable[..., Awaitable[str]], optimizer: Optimizer, tokens: dict[str, str]
) -> None:
    from almere.partners.v1 import partners_pb2 as ppb

    from services.parking.service import SPEC as PARKING
    from services.partners.service import SPEC as PARTNERS

    async with (
        grpc.aio.insecure_channel(await start_service(PARKING)) as p,
        grpc.aio.insecure_channel(await start_service(PARTNERS)) as q,
    ):
        parking, partners = Parking(p, tokens), Partners(q, tokens)
        await partners.as_("engineer").CreatePartner(
            ppb.CreatePartnerRequest(
                partner_id="op-a", partner=ppb.Partner(display_name="A", kind=ppb.PARTNER_KIND_GARAGE_OPERATOR)
            )
        )
        await partners.as_("operator").SetAgreement(
            ppb.SetAgreementRequest(
                name="partners/op-a/agreements/occupancy",
                agreement=ppb.Agreement(
                    audiences=[
                        ppb.AudienceTerms(audience=ppb.AUDIENCE_OPTIMIZER, detail=ppb.DETAIL_RAW),
                        ppb.AudienceTerms(audience=ppb.AUDIENCE_ENGINEER, detail=ppb.DETAIL_ROUNDED, round_to=10),
                    ],
                    retention_days=30,
                    purposes=["traffic-management"],
                ),
            )
        )
        await parking.create("garage-forum", capacity=50, entrance_edge_ids=[FORUM.edge])  # operator op-a
        await parking.report("garage-forum", 47, 1)

        async def seen_by(caller: str) -> pb.FacilityState | None:
            state = await optimizer.as_(caller, purpose="traffic-management").GetNetworkState(
                pb.GetNetworkStateRequest()
            )
            return next((f for f in state.facilities if f.facility_id == "garage-forum" and f.sharing.revision), None)

        raw = await _until(lambda: seen_by("optimizer"), "the optimizer to count garage-forum under the agreement")
        await _until(lambda: _counted(seen_by("optimizer"), 47), "the count to reach the optimizer")
        rounded, withheld = await seen_by("engineer"), await seen_by("police")
        assert raw.sharing.outcome == ppb.ACCESS_OUTCOME_FULL
        assert rounded is not None and (rounded.occupied, rounded.sharing.outcome) == (50, ppb.ACCESS_OUTCOME_DEGRADED)
        assert withheld is not None and (withheld.occupied, withheld.sharing.outcome) == (
            0,
            ppb.ACCESS_OUTCOME_WITHHELD,
        )

        # The operator takes its counts back from the optimizer: the PARKING stream carries the garage
        # without them, and the model knows it has no count (no guidance goes there), not an empty one.
        await partners.as_("operator").SetAgreement(
            ppb.SetAgreementRequest(
                name="partners/op-a/agreements/occupancy",
                agreement=ppb.Agreement(
                    audiences=[ppb.AudienceTerms(audience=ppb.AUDIENCE_ENGINEER, detail=ppb.DETAIL_RAW)],
                    retention_days=30,
                    purposes=["traffic-management"],
                ),
            )
        )

        async def unknown() -> pb.FacilityState | None:
            await parking.report("garage-forum", 12, next(sequence))
            found = await seen_by("engineer")
            return found if found is not None and found.count_unknown else None

        sequence = itertools.count(2)
        state = await _until(unknown, "the optimizer to lose garage-forum's count")
        assert (state.occupied, state.sharing.revision) == (0, 2)


async def _counted(state: Awaitable[pb.FacilityState | None], occupied: int) -> bool:
    found = await state
    return found is not None and found.occupied == occupied


async def test_a_trusted_partners_unverified_report_steers_only_when_strategy_and_agreement_allow(
    start_service: Callable[..., Awaitable[str]], almere_net: Path, optimizer: Optimizer, tokens: dict[str, str]
) -> None:
    from almere.partners.v1 import partners_pb2 as ppb

    from services.incidents.service import SPEC as INCIDENTS
    from services.partners.service import SPEC as PARTNERS

    async with (
        grpc.aio.insecure_channel(await start_service(INCIDENTS, network_file=almere_net)) as i,
        grpc.aio.insecure_channel(await start_service(PARTNERS)) as q,
    ):
        incidents, partners = Incidents(i, tokens), Partners(q, tokens)
        # firm-a is trusted and shares its reports with the optimizer; firm-b is trusted, but its
        # agreement keeps its reports for public safety.
        for firm, audiences in (
            ("firm-a", [ppb.AUDIENCE_PUBLIC_SAFETY, ppb.AUDIENCE_OPTIMIZER]),
            ("firm-b", [ppb.AUDIENCE_PUBLIC_SAFETY]),
        ):
            await partners.as_("engineer").CreatePartner(
                ppb.CreatePartnerRequest(
                    partner_id=firm,
                    partner=ppb.Partner(
                        display_name=firm, kind=ppb.PARTNER_KIND_SECURITY_FIRM, trust_level=ppb.TRUST_LEVEL_TRUSTED
                    ),
                )
            )
            await partners.as_("engineer").SetAgreement(
                ppb.SetAgreementRequest(
                    name=f"partners/{firm}/agreements/incident-reports",
                    agreement=ppb.Agreement(
                        audiences=[ppb.AudienceTerms(audience=a, detail=ppb.DETAIL_RAW) for a in audiences],
                        retention_days=30,
                        purposes=["public-safety", "traffic-management"],
                    ),
                )
            )

        async def partner_report(caller: str, edge: str) -> ipb.Incident:
            async def reported() -> ipb.Incident | None:
                try:
                    return await incidents.report(
                        caller,
                        type=ipb.INCIDENT_TYPE_HAZARD,
                        network_location=ipb.NetworkLocation(edge_id=edge),
                        impact=ipb.Impact(full_closure=True),
                        partner_report=ipb.PartnerReport(description="burning car on the road"),
                    )
                except grpc.aio.AioRpcError as err:
                    assert "not registered" in (err.details() or ""), err.details()
                    return None

            return await _until(reported, f"{caller}'s partner to reach the incident service")

        async def acting(edge: str) -> list[str]:
            state = await optimizer.as_("engineer").GetNetworkState(pb.GetNetworkStateRequest(edge_ids=[edge]))
            return list(state.edges[0].incidents)

        async def consumed(n: int) -> bool:
            status = await optimizer.as_("engineer").GetStatus(pb.GetStatusRequest())
            return status.consumed["INCIDENTS"] >= n

        # The default strategy: only what the police verified steers.
        await partner_report("partner", COLLISION)
        await _until(lambda: consumed(1), "the optimizer to consume the report")
        assert await acting(COLLISION) == []

        steer = pb.SetStrategyRequest(
            strategy=pb.Strategy(trusted_reports_steer=True), update_mask=FieldMask(paths=["trusted_reports_steer"])
        )
        await optimizer.as_("engineer").SetStrategy(steer)
        trusted = await partner_report("partner", SECOND)
        assert await _until(lambda: acting(SECOND), "the trusted report to steer") == [trusted.name]
        kept = await partner_report("other_partner", WEST_IN)
        await _until(lambda: consumed(3), "the optimizer to consume firm-b's report")
        assert await acting(WEST_IN) == [], f"{kept.name}: firm-b's agreement does not share reports with the optimizer"
