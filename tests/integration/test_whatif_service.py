"""The what-if service with a real nats-server and database: validation, run requests on the
WHATIF_RUNS work queue, results played by the test as the workers would, forecast checks, and
adoption through the real optimizer and incident services."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.optimizer.v1 import optimizer_pb2_grpc
from almere.whatif.v1 import runs_pb2, whatif_pb2_grpc
from almere.whatif.v1 import whatif_pb2 as pb
from google.protobuf.field_mask_pb2 import FieldMask
from nats.aio.client import Client as Nats
from nats.js.api import AckPolicy, ConsumerConfig

from apps.natsd import NatsServer
from contract import bus_access
from contract.bus import OBSERVED, RUN_FINISHED, TWIN_STATE_REQUEST, WHATIF_RESULTS, WHATIF_RUNS
from services.common.config import Settings
from tests.integration.helpers import Client, Incidents, ts

TEST_USER = "whatif-test"


class _Everything(bus_access.BusUser):
    """The test's own bus user: it plays the twin and the workers."""

    def permissions(self) -> dict[str, Any]:
        return {"publish": {"allow": [">"]}, "subscribe": {"allow": [">"]}}


@pytest.fixture(autouse=True)
def _bus_users(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bus users for the what-if service (until contract.bus_access names it) and for the test."""
    if "whatif" not in bus_access.USERS:
        monkeypatch.setitem(bus_access.USERS, "whatif", _Everything(name="whatif"))
    monkeypatch.setitem(bus_access.USERS, TEST_USER, _Everything(name=TEST_USER))


class WhatIfs(Client):
    def __init__(self, channel: grpc.aio.Channel, tokens: dict[str, str]) -> None:
        super().__init__(whatif_pb2_grpc.WhatIfServiceStub(channel), tokens)


@pytest.fixture
async def bus(nats_server: NatsServer) -> AsyncIterator[Nats]:
    nc = await nats.connect(nats_server.url, **nats_server.client_options(TEST_USER))
    yield nc
    await nc.close()


async def _code(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value.code(), err.value.details() or ""


async def _until(check: Callable[[], Awaitable[Any]], what: str, within_s: float = 15) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _what_if(**fields: Any) -> pb.WhatIf:
    base: dict[str, Any] = {
        "title": "Collision on the Hogering",
        "start_sources": [pb.START_SOURCE_LIVE_PICTURE],
        "horizon_minutes": 60,
        "seeds": 2,
        "plans": [pb.ResponsePlan(plan_id="guide", title="Guide around it")],
    }
    base.update(fields)
    return pb.WhatIf(**base)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"horizon_minutes": 20}, "horizon_minutes must be 30-120"),
        ({"horizon_minutes": 121}, "horizon_minutes must be 30-120"),
        ({"seeds": 0}, "seeds must be 1-10"),
        ({"seeds": 11}, "seeds must be 1-10"),
        ({"start_sources": []}, "start_sources needs at least one"),
        ({"plans": []}, "plans must hold 1-6"),
        ({"plans": [pb.ResponsePlan(plan_id=f"p{i}") for i in range(7)]}, "plans must hold 1-6"),
        ({"plans": [pb.ResponsePlan(plan_id=f"p{i}") for i in range(6)]}, "more than 6"),
        ({"plans": [pb.ResponsePlan(plan_id="Bad_Id")]}, "plan_id 'Bad_Id' is malformed"),
        ({"plans": [pb.ResponsePlan(plan_id="a"), pb.ResponsePlan(plan_id="a")]}, "'a' is not unique"),
    ],
)
async def test_bad_what_ifs_are_refused_and_nothing_is_written(
    start_service: Callable[..., Awaitable[str]], tokens: dict[str, str], fields: dict[str, Any], message: str
) -> None:
    from services.whatif.service import SPEC

    async with grpc.aio.insecure_channel(await start_service(SPEC)) as channel:
        client = WhatIfs(channel, tokens)
        code, details = await _code(
            client.as_("engineer").CreateWhatIf(pb.CreateWhatIfRequest(what_if=_what_if(**fields)))
        )
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details
        code, _ = await _code(client.as_("police").CreateWhatIf(pb.CreateWhatIfRequest(what_if=_what_if())))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        listed = await client.as_("police").ListWhatIfs(pb.ListWhatIfsRequest())
        assert list(listed.what_ifs) == []


async def test_no_twin_answering_is_a_failed_precondition(
    start_service: Callable[..., Awaitable[str]], tokens: dict[str, str]
) -> None:
    from services.whatif.service import SPEC

    address = await start_service(SPEC, whatif_twin_timeout_seconds=0.3)
    async with grpc.aio.insecure_channel(address) as channel:
        client = WhatIfs(channel, tokens)
        request = pb.CreateWhatIfRequest(what_if=_what_if(start_sources=[pb.START_SOURCE_TWIN_STATE]))
        code, details = await _code(client.as_("engineer").CreateWhatIf(request))
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "no twin answered" in details
        assert list((await client.as_("engineer").ListWhatIfs(pb.ListWhatIfsRequest())).what_ifs) == []


async def _answer_as_twin(bus: Nats) -> None:
    async def save(message: Any) -> None:
        request = runs_pb2.SaveStateRequest.FromString(message.data)
        saved = runs_pb2.SavedState(
            object_name=f"{request.what_if}.xml", scenario="almere-centrum", seed=7, sim_time_seconds=3600
        )
        await message.respond(saved.SerializeToString())

    await bus.subscribe(TWIN_STATE_REQUEST, cb=save)


async def _take_runs(bus: Nats, expected: int) -> list[runs_pb2.RunRequest]:
    js = bus.jetstream()
    sub = await js.pull_subscribe(
        WHATIF_RUNS.subjects,
        durable="test-worker",
        stream=WHATIF_RUNS.name,
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
    )
    taken: list[runs_pb2.RunRequest] = []
    deadline = time.monotonic() + 15
    while len(taken) < expected and time.monotonic() < deadline:
        try:
            messages = await sub.fetch(expected - len(taken), timeout=1)
        except TimeoutError:
            continue
        for message in messages:
            taken.append(runs_pb2.RunRequest.FromString(message.data))
            await message.ack()
    with pytest.raises(TimeoutError):
        await sub.fetch(1, timeout=0.5)  # nothing more than plans x seeds x starts
    await sub.unsubscribe()
    return taken


# Per plan, the network delay (h) of each seed: `close` is worst, `guide` best.
DELAY = {"do-nothing": 10.0, "guide": 6.0, "close": 14.0}


def _result(request: runs_pb2.RunRequest) -> runs_pb2.RunResult:
    delay = DELAY[request.plan.plan_id] + request.seed * 0.5
    if request.start_source == pb.START_SOURCE_LIVE_PICTURE:
        delay *= 1.1  # the reconstruction overestimates by 10 %
    result = runs_pb2.RunResult(
        what_if=request.what_if,
        run_id=request.run_id,
        plan_id=request.plan.plan_id,
        seed=request.seed,
        start_source=request.start_source,
        kpis={"network_delay_h": delay, "arrived": 1000.0 - delay, "emergency_access_s": 60 + delay},
        wall_seconds=12.0,
    )
    result.occupancy.add(facility_id="forum", capacity=500, occupied=[100 + i * delay for i in range(60)])
    return result


async def test_a_what_if_runs_ranks_reports_checks_and_is_adopted(
    start_service: Callable[..., Awaitable[str]],
    incidents: str,
    almere_net: Path,
    tokens: dict[str, str],
    bus: Nats,
    tmp_path: Path,
    settings: Settings,
) -> None:
    from services.optimizer.service import SPEC as OPTIMIZER
    from services.whatif.service import SPEC

    optimizer_address = await start_service(OPTIMIZER, network_file=almere_net)
    reports = tmp_path / "reports"
    address = await start_service(
        SPEC,
        incidents_address=incidents,
        optimizer_address=optimizer_address,
        service_token=tokens["engineer"],  # the what-if service's token holds the engineer role
        whatif_reports_dir=reports,
    )
    await _answer_as_twin(bus)
    async with (
        grpc.aio.insecure_channel(address) as channel,
        grpc.aio.insecure_channel(incidents) as incidents_channel,
        grpc.aio.insecure_channel(optimizer_address) as optimizer_channel,
    ):
        client = WhatIfs(channel, tokens)
        incident_client = Incidents(incidents_channel, tokens)
        optimizer = Client(optimizer_pb2_grpc.OptimizerServiceStub(optimizer_channel), tokens)
        crash = await incident_client.report(
            network_location=ipb.NetworkLocation(edge_id="ring-w-n"), impact=ipb.Impact(closed_lanes=[0])
        )
        confirm = ipb.TransitionIncidentRequest(name=crash.name, state=ipb.INCIDENT_STATE_CONFIRMED)
        await incident_client.as_("police").TransitionIncident(confirm)
        guide = pb.ResponsePlan(
            plan_id="guide",
            strategy=opb.Strategy(parking_guidance=False, reserve_spaces=25),
            strategy_mask=FieldMask(paths=["parking_guidance", "reserve_spaces"]),
        )
        close = pb.ResponsePlan(
            plan_id="close", closures=[pb.Closure(incident=crash.name, edge_id="ring-w-n", full_closure=True)]
        )
        started = time.monotonic()
        created = (
            await client.as_("engineer").CreateWhatIf(
                pb.CreateWhatIfRequest(
                    what_if=_what_if(
                        start_sources=[pb.START_SOURCE_TWIN_STATE, pb.START_SOURCE_LIVE_PICTURE], plans=[guide, close]
                    )
                )
            )
        ).what_if
        assert created.state == pb.WhatIf.STATE_RUNNING and created.runs_total == 3 * 2 * 2
        assert [p.plan_id for p in created.plans] == ["guide", "close", "do-nothing"]
        assert (created.scenario, created.start_sim_time_seconds) == ("almere-centrum", 3600)

        runs = await _take_runs(bus, created.runs_total)
        assert len({r.run_id for r in runs}) == 12
        live = [r for r in runs if r.start_source == pb.START_SOURCE_LIVE_PICTURE]
        assert live[0].live_picture.closures[0].incident == crash.name
        twin = [r for r in runs if r.start_source == pb.START_SOURCE_TWIN_STATE]
        assert twin[0].saved_state.object_name == f"{created.name}.xml"

        js = bus.jetstream()
        for request in runs[:-1]:
            await js.publish(WHATIF_RESULTS.subject(RUN_FINISHED, request.run_id), _result(request).SerializeToString())
        # The twin passes the horizon before the last run is in (a busy machine): what it observed
        # is checked once the what-if finishes.
        observed = runs_pb2.Observed(what_if=created.name, kpis={"network_delay_h": 10.75, "arrived": 900.0})
        await js.publish(
            WHATIF_RESULTS.subject(OBSERVED, created.name.removeprefix("whatIfs/")), observed.SerializeToString()
        )
        await js.publish(WHATIF_RESULTS.subject(RUN_FINISHED, runs[-1].run_id), _result(runs[-1]).SerializeToString())
        await js.publish(WHATIF_RESULTS.subject(RUN_FINISHED, runs[0].run_id), _result(runs[0]).SerializeToString())

        async def finished() -> pb.WhatIf | None:
            got = (await client.as_("fire").GetWhatIf(pb.GetWhatIfRequest(name=created.name))).what_if
            return got if got.state != pb.WhatIf.STATE_RUNNING else None

        done = await _until(finished, "the what-if to finish")
        print(f"create -> succeeded in {time.monotonic() - started:.2f} s")
        assert done.state == pb.WhatIf.STATE_SUCCEEDED and done.runs_done == 12
        for source in (pb.START_SOURCE_TWIN_STATE, pb.START_SOURCE_LIVE_PICTURE):
            ranked = sorted((r for r in done.results if r.start_source == source), key=lambda r: r.rank)
            assert [r.plan_id for r in ranked] == ["guide", "do-nothing", "close"]
            nothing = ranked[1]
            assert nothing.score == pytest.approx(sum(v for k, v in _weights().items() if k in nothing.kpis))
            delay = nothing.kpis["network_delay_h"]
            scale = 1.1 if source == pb.START_SOURCE_LIVE_PICTURE else 1.0
            assert list(delay.per_seed) == pytest.approx([10.5 * scale, 11.0 * scale])
            assert (delay.min, delay.max) == pytest.approx((10.5 * scale, 11.0 * scale))
            assert nothing.run_seconds == 24.0 and nothing.occupancy[0].facility_id == "forum"
        errors = {(e.plan_id, e.kpi): e for e in done.start_errors}
        assert errors[("guide", "network_delay_h")].relative_error == pytest.approx(0.1)
        assert done.report_path == f"whatif/{created.name.removeprefix('whatIfs/')}/report.md"
        folder = reports / done.report_path.rsplit("/", 1)[0]
        assert (folder / "report.md").read_text().count("| 1 | guide |") == 2
        assert (folder / "network_delay_h.png").stat().st_size > 0 and (folder / "occupancy.png").exists()

        async def checked() -> list[pb.ForecastCheck]:
            got = (await client.as_("ems").GetWhatIf(pb.GetWhatIfRequest(name=created.name))).what_if
            return list(got.checks)

        checks = {(c.kpi, c.start_source): c for c in await _until(checked, "the forecast checks")}
        twin_delay = checks[("network_delay_h", pb.START_SOURCE_TWIN_STATE)]
        assert twin_delay.within_spread and twin_delay.relative_error == pytest.approx(0.0)
        assert not checks[("network_delay_h", pb.START_SOURCE_LIVE_PICTURE)].within_spread
        scores = (await client.as_("optimizer").GetForecastScore(pb.GetForecastScoreRequest())).scores
        by_key = {(s.kpi, s.start_source): s for s in scores}
        assert by_key[("network_delay_h", pb.START_SOURCE_TWIN_STATE)].within_spread_share == 1.0
        assert by_key[("arrived", pb.START_SOURCE_LIVE_PICTURE)].checks == 1

        adopt = client.as_("engineer").AdoptPlan
        code, _ = await _code(client.as_("police").AdoptPlan(pb.AdoptPlanRequest(name=created.name, plan_id="guide")))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        code, details = await _code(adopt(pb.AdoptPlanRequest(name=created.name, plan_id="nope")))
        assert code == grpc.StatusCode.NOT_FOUND and "nope" in details
        adopted = await adopt(pb.AdoptPlanRequest(name=created.name, plan_id="guide"))
        assert adopted.what_if.adopted_plan_id == "guide" and adopted.what_if.adopted_by == "engineer"
        strategy = (await optimizer.as_("engineer").GetStrategy(opb.GetStrategyRequest())).strategy
        assert (strategy.parking_guidance, strategy.reserve_spaces) == (False, 25)
        adopted = await adopt(pb.AdoptPlanRequest(name=created.name, plan_id="close"))
        assert adopted.what_if.adopted_plan_id == "close" and crash.name in adopted.changes[0]
        updated = (await incident_client.as_("police").GetIncident(ipb.GetIncidentRequest(name=crash.name))).incident
        assert updated.impact.full_closure
        # The incident cleared while the plans were weighed: its closure is no longer needed.
        for state in (ipb.INCIDENT_STATE_ACTIVE, ipb.INCIDENT_STATE_CLEARED):
            move = ipb.TransitionIncidentRequest(name=crash.name, state=state)
            await incident_client.as_("police").TransitionIncident(move)
        adopted = await adopt(pb.AdoptPlanRequest(name=created.name, plan_id="close"))
        assert list(adopted.changes) == [f"{crash.name}: over (INCIDENT_STATE_CLEARED), no closure needed"]


def _weights() -> dict[str, float]:
    from services.whatif.logic import SCORE_WEIGHTS

    return dict(SCORE_WEIGHTS)


async def test_adopting_moves_an_event_and_a_failing_lever_names_what_was_applied(
    start_service: Callable[..., Awaitable[str]],
    incidents: str,
    signals: str,
    tokens: dict[str, str],
    bus: Nats,
) -> None:
    from services.whatif.service import SPEC

    address = await start_service(
        SPEC, incidents_address=incidents, signals_address=signals, service_token=tokens["engineer"]
    )
    async with (
        grpc.aio.insecure_channel(address) as channel,
        grpc.aio.insecure_channel(incidents) as incidents_channel,
    ):
        client = WhatIfs(channel, tokens)
        incident_client = Incidents(incidents_channel, tokens)
        start = datetime.now(UTC) + timedelta(hours=2)
        festival = ipb.PlannedEvent(
            display_name="Festival",
            closures=[
                ipb.ScheduledClosure(
                    title="Stadhuisplein closed",
                    network_location=ipb.NetworkLocation(edge_id="spoke-w-in"),
                    impact=ipb.Impact(
                        full_closure=True,
                        expected_start_time=ts(start),
                        expected_end_time=ts(start + timedelta(hours=3)),
                    ),
                )
            ],
        )
        event = (
            await incident_client.as_("engineer").CreatePlannedEvent(
                ipb.CreatePlannedEventRequest(planned_event_id="festival", planned_event=festival)
            )
        ).planned_event
        later = pb.ResponsePlan(
            plan_id="later",
            events=[pb.EventChange(planned_event=event.name, shift_minutes=30)],
            signals=[pb.SignalArea(control=pb.SIGNAL_CONTROL_FIXED)],  # none is adaptive: nothing to do
        )
        broken = pb.ResponsePlan(
            plan_id="broken",
            closures=[pb.Closure(edge_id="spoke-e-in", closed_lanes=[0])],
            signals=[pb.SignalArea(sumo_tls_ids=["no-such-light"], control=pb.SIGNAL_CONTROL_FIXED)],
        )
        created = (
            await client.as_("engineer").CreateWhatIf(
                pb.CreateWhatIfRequest(what_if=_what_if(seeds=1, plans=[later, broken]))
            )
        ).what_if
        assert not list(created.plans[0].signals[0].sumo_tls_ids)
        runs = await _take_runs(bus, created.runs_total)
        js = bus.jetstream()
        for request in runs:
            await js.publish(WHATIF_RESULTS.subject(RUN_FINISHED, request.run_id), _result_for(request))

        async def finished() -> bool:
            got = (await client.as_("engineer").GetWhatIf(pb.GetWhatIfRequest(name=created.name))).what_if
            return bool(got.state == pb.WhatIf.STATE_SUCCEEDED)

        await _until(finished, "the what-if to finish")
        adopted = await client.as_("engineer").AdoptPlan(pb.AdoptPlanRequest(name=created.name, plan_id="later"))
        moved_name = adopted.changes[0].split(":", 1)[0]
        assert adopted.changes[1] == f"{event.name}: cancelled (moved)"
        moved = (
            await incident_client.as_("engineer").GetPlannedEvent(ipb.GetPlannedEventRequest(name=moved_name))
        ).planned_event
        moved_start = moved.closures[0].impact.expected_start_time.ToDatetime(UTC)
        assert moved_start == start + timedelta(minutes=30)
        old = await incident_client.as_("engineer").GetPlannedEvent(ipb.GetPlannedEventRequest(name=event.name))
        assert old.planned_event.cancelled

        code, details = await _code(
            client.as_("engineer").AdoptPlan(pb.AdoptPlanRequest(name=created.name, plan_id="broken"))
        )
        assert code == grpc.StatusCode.FAILED_PRECONDITION and "no-such-light" in details
        assert "already applied: incidents/" in details and "new closure of spoke-e-in" in details
        after = (await client.as_("engineer").GetWhatIf(pb.GetWhatIfRequest(name=created.name))).what_if
        assert after.adopted_plan_id == "later"  # the failed adoption is recorded, not adopted

        second = await client.as_("engineer").CreateWhatIf(pb.CreateWhatIfRequest(what_if=_what_if(seeds=1)))
        first_page = await client.as_("police").ListWhatIfs(pb.ListWhatIfsRequest(page_size=1))
        assert [w.name for w in first_page.what_ifs] == [second.what_if.name] and first_page.next_page_token
        next_page = await client.as_("police").ListWhatIfs(
            pb.ListWhatIfsRequest(page_size=1, page_token=first_page.next_page_token)
        )
        assert [w.name for w in next_page.what_ifs] == [created.name] and not next_page.next_page_token


def _result_for(request: runs_pb2.RunRequest) -> bytes:
    result = runs_pb2.RunResult(
        what_if=request.what_if,
        run_id=request.run_id,
        plan_id=request.plan.plan_id,
        seed=request.seed,
        start_source=request.start_source,
        kpis={"network_delay_h": 5.0},
    )
    return result.SerializeToString()
