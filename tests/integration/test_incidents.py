"""Incidents over gRPC with a real network, NATS and database: reports, snapping, lifecycle, roles,
watch, history and planned events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import grpc
import nats
import pytest
from almere.incidents.v1 import incidents_pb2 as pb
from almere.incidents.v1.events_pb2 import IncidentEvent
from almere.type.v1 import geo_pb2
from google.protobuf.field_mask_pb2 import FieldMask

from apps.natsd import NatsServer
from tests.integration.helpers import Incidents, read_stream, ts, wait_for_last_message

S = pb.IncidentState


@pytest.fixture
async def client(incidents: str, tokens: dict[str, str]) -> AsyncIterator[Incidents]:
    async with grpc.aio.insecure_channel(incidents) as channel:
        yield Incidents(channel, tokens)


async def events_of(nats_server: NatsServer) -> list[tuple[str, object]]:
    return await read_stream(nats_server, "almere.incidents.v1.>", stream="INCIDENTS")


def lane_closure(**impact: object) -> pb.Impact:
    return pb.Impact(closed_lanes=[1], speed_limit_kmh=30, **impact)  # type: ignore[arg-type]


async def test_police_report_is_snapped_stored_and_published(client: Incidents, nats_server: NatsServer) -> None:
    incident = await client.report(impact=lane_closure(), notes="two cars, no injuries", severity=pb.SEVERITY_MAJOR)
    assert incident.name.startswith("incidents/inc-")
    assert (incident.state, incident.reporting_agency, incident.reporter) == (
        S.INCIDENT_STATE_REPORTED,
        pb.AGENCY_POLICE,
        "police",
    )
    loc = incident.network_location
    assert (loc.edge_id, list(loc.lane_indices), loc.snapped) == ("ring-w-n", [1], True)
    assert loc.snap_distance_meters < 5 and 0 < loc.position_meters < 984
    events = await events_of(nats_server)
    assert [s for s, _ in events] == [f"almere.incidents.v1.incident_reported.{incident.name[10:]}"]
    event = events[0][1]
    assert event.version == 1 and event.actor == "police"  # type: ignore[attr-defined]
    assert list(event.incident.impact.closed_lanes) == [1]  # type: ignore[attr-defined]
    assert event.incident.impact.speed_limit_kmh == 30  # type: ignore[attr-defined]


async def test_edge_only_report_gets_coordinates(client: Incidents) -> None:
    incident = await client.report(
        caller="fire",
        type=pb.INCIDENT_TYPE_FIRE,
        network_location=pb.NetworkLocation(edge_id="spoke-w-in", position_meters=50),
    )
    assert incident.reporting_agency == pb.AGENCY_FIRE
    assert incident.network_location.snapped is False
    assert incident.location.latitude == pytest.approx(52.3703, abs=1e-3)


async def test_report_is_idempotent_on_request_id(client: Incidents, nats_server: NatsServer) -> None:
    first = await client.report(request_id="req-1")
    again = await client.as_("police").ReportIncident(
        pb.ReportIncidentRequest(
            request_id="req-1", incident=pb.Incident(type=pb.INCIDENT_TYPE_HAZARD, location=first.location)
        )
    )
    assert again.duplicate and again.incident.name == first.name and again.incident.type == pb.INCIDENT_TYPE_COLLISION
    other_caller = await client.report(caller="ems", request_id="req-1")
    assert other_caller.name != first.name
    assert len(await events_of(nats_server)) == 2


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"type": 99}, "not an incident type"),
        ({"type": pb.INCIDENT_TYPE_UNSPECIFIED}, "not an incident type"),
        (
            {
                "impact": pb.Impact(
                    expected_start_time=ts(), expected_end_time=ts(datetime.now(UTC) - timedelta(hours=1))
                )
            },
            "expected_end_time must be after",
        ),
        ({"impact": pb.Impact(closed_lanes=[3])}, "has 2 lane(s); lane 3 does not exist"),
        ({"network_location": pb.NetworkLocation(edge_id="ring-w-n", lane_indices=[2])}, "lane 2 does not exist"),
        ({"network_location": pb.NetworkLocation(edge_id="no-such-edge")}, "not in the road network"),
        ({"network_location": pb.NetworkLocation(edge_id="ring-w-n", position_meters=5000)}, "beyond the end"),
        ({"notes": "x" * 4001}, "at most 4000"),
        ({"location": geo_pb2.LatLng(latitude=52.0, longitude=5.0)}, "no drivable road"),
        ({"location": geo_pb2.LatLng(latitude=95.0, longitude=5.0)}, "latitude"),
        ({"impact": pb.Impact(speed_limit_kmh=300)}, "speed_limit_kmh"),
    ],
)
async def test_bad_reports_are_invalid_and_write_nothing(
    client: Incidents, nats_server: NatsServer, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.report(**fields)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    listed = await client.as_("engineer").ListIncidents(pb.ListIncidentsRequest())
    assert list(listed.incidents) == []
    assert await events_of(nats_server) == []


async def test_missing_request_id_and_unauthorised_reporters(client: Incidents) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.as_("police").ReportIncident(pb.ReportIncidentRequest(incident=pb.Incident(type=1)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    for caller in ("operator", "optimizer"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.report(caller=caller)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_lifecycle_and_its_audit_trail(client: Incidents, nats_server: NatsServer) -> None:
    incident = await client.report()
    engineer = client.as_("engineer")

    async def move(state: int, reason: str = "") -> pb.Incident:
        reply = await engineer.TransitionIncident(
            pb.TransitionIncidentRequest(name=incident.name, state=state, reason=reason)
        )
        return reply.incident

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await move(S.INCIDENT_STATE_CLEARED)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cannot go from REPORTED to CLEARED" in err.value.details()
    for state in (
        S.INCIDENT_STATE_CONFIRMED,
        S.INCIDENT_STATE_ACTIVE,
        S.INCIDENT_STATE_CLEARING,
        S.INCIDENT_STATE_CLEARED,
    ):
        moved = await move(state, reason=f"to {state}")
        assert moved.state == state
    assert moved.version == 5
    for state in (S.INCIDENT_STATE_ACTIVE, S.INCIDENT_STATE_CANCELLED):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await move(state)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await move(42)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    history = await engineer.ListIncidentHistory(pb.ListIncidentHistoryRequest(name=incident.name, page_size=3))
    more = await engineer.ListIncidentHistory(
        pb.ListIncidentHistoryRequest(name=incident.name, page_size=3, page_token=history.next_page_token)
    )
    entries = [*history.entries, *more.entries]
    assert [(e.version, e.action, e.actor, e.to_state) for e in entries] == [
        (1, "reported", "police", S.INCIDENT_STATE_REPORTED),
        (2, "transitioned", "engineer", S.INCIDENT_STATE_CONFIRMED),
        (3, "transitioned", "engineer", S.INCIDENT_STATE_ACTIVE),
        (4, "transitioned", "engineer", S.INCIDENT_STATE_CLEARING),
        (5, "transitioned", "engineer", S.INCIDENT_STATE_CLEARED),
    ]
    assert entries[2].from_state == S.INCIDENT_STATE_CONFIRMED and entries[2].reason == f"to {S.INCIDENT_STATE_ACTIVE}"
    states = [e.incident.state for s, e in await events_of(nats_server) if ".incident_state_changed." in s]  # type: ignore[attr-defined]
    assert states == [
        S.INCIDENT_STATE_CONFIRMED,
        S.INCIDENT_STATE_ACTIVE,
        S.INCIDENT_STATE_CLEARING,
        S.INCIDENT_STATE_CLEARED,
    ]


async def test_update_with_mask_replaces_fields_and_resnaps(client: Incidents, nats_server: NatsServer) -> None:
    incident = await client.report(impact=lane_closure())
    patch = pb.Incident(
        name=incident.name,
        impact=pb.Impact(full_closure=True),
        title="not in the mask",
        location=geo_pb2.LatLng(latitude=52.3702, longitude=5.2120),  # on the west spoke now
    )
    updated = (
        await client.as_("police").UpdateIncident(
            pb.UpdateIncidentRequest(incident=patch, update_mask=FieldMask(paths=["impact", "location"]))
        )
    ).incident
    assert updated.impact.full_closure and list(updated.impact.closed_lanes) == []
    assert updated.title == "Collision on the Hogering" and updated.version == 2
    assert updated.network_location.edge_id != "ring-w-n"
    moved = (
        await client.as_("police").UpdateIncident(
            pb.UpdateIncidentRequest(
                incident=pb.Incident(name=incident.name, network_location=pb.NetworkLocation(edge_id="ring-e-s")),
                update_mask=FieldMask(paths=["network_location"]),
            )
        )
    ).incident
    # Moved by edge alone: its coordinates follow (the east side of the ring, not the west spoke).
    assert moved.network_location.edge_id == "ring-e-s" and moved.location.longitude > 5.222
    event = next(e for s, e in await events_of(nats_server) if ".incident_updated." in s)
    assert list(event.changed_fields) == ["impact", "location"]  # type: ignore[attr-defined]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.as_("police").UpdateIncident(
            pb.UpdateIncidentRequest(incident=pb.Incident(name=incident.name), update_mask=FieldMask(paths=["state"]))
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_who_may_change_what(client: Incidents) -> None:
    incident = await client.report()
    request = pb.TransitionIncidentRequest(name=incident.name, state=S.INCIDENT_STATE_CONFIRMED)
    for caller in ("fire", "operator", "optimizer"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.as_(caller).TransitionIncident(request)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await client.as_("police").TransitionIncident(request)).incident.state == S.INCIDENT_STATE_CONFIRMED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.as_("operator").ListIncidentHistory(pb.ListIncidentHistoryRequest(name=incident.name))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.as_("engineer").GetIncident(pb.GetIncidentRequest(name="incidents/inc-missing"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_each_role_sees_exactly_its_view_in_get_list_and_watch(client: Incidents) -> None:
    collision = await client.report(notes="driver taken to hospital")
    police_action = await client.report(type=pb.INCIDENT_TYPE_POLICE_ACTION, notes="arrest in progress")
    expected = {
        # caller: (sees collision notes, sees police-action notes, sees reporter)
        "police": (True, True, True),
        "fire": (True, True, True),
        "engineer": (True, False, True),
        "operator": (False, False, False),
        "optimizer": (False, False, False),
    }
    for caller, (collision_notes, action_notes, reporter) in expected.items():
        me = client.as_(caller)
        got = (await me.GetIncident(pb.GetIncidentRequest(name=police_action.name))).incident
        listed = {i.name: i for i in (await me.ListIncidents(pb.ListIncidentsRequest())).incidents}
        watch = me.WatchIncidents(pb.WatchIncidentsRequest())
        watched = {}
        for _ in range(2):
            message = await asyncio.wait_for(watch.read(), 5)
            watched[message.incident.name] = message.incident
        watch.cancel()
        for view in (listed, watched):
            assert bool(view[collision.name].notes) is collision_notes, (caller, "collision notes")
            assert bool(view[police_action.name].notes) is action_notes, (caller, "police-action notes")
            assert bool(view[collision.name].reporter) is reporter, (caller, "reporter")
            assert list(view[collision.name].network_location.lane_indices) == [1]  # the impact: everyone
        assert got == listed[police_action.name]


async def test_list_filters_and_pages(client: Incidents) -> None:
    names = [
        (await client.report(type=pb.INCIDENT_TYPE_BREAKDOWN if i % 2 else pb.INCIDENT_TYPE_HAZARD)).name
        for i in range(5)
    ]
    fire = await client.report(
        caller="fire", type=pb.INCIDENT_TYPE_FIRE, location=geo_pb2.LatLng(latitude=52.3772, longitude=5.2210)
    )
    engineer = client.as_("engineer")
    await engineer.TransitionIncident(pb.TransitionIncidentRequest(name=names[0], state=S.INCIDENT_STATE_CANCELLED))
    seen, token = [], ""
    while True:
        page = await engineer.ListIncidents(pb.ListIncidentsRequest(page_size=2, page_token=token))
        seen += [i.name for i in page.incidents]
        token = page.next_page_token
        if not token:
            break
    assert seen == [fire.name, *reversed(names)]  # newest first
    by_state = await engineer.ListIncidents(pb.ListIncidentsRequest(states=[S.INCIDENT_STATE_CANCELLED]))
    assert [i.name for i in by_state.incidents] == [names[0]]
    by_type = await engineer.ListIncidents(pb.ListIncidentsRequest(types=[pb.INCIDENT_TYPE_BREAKDOWN]))
    assert [i.name for i in by_type.incidents] == [names[3], names[1]]
    by_agency = await engineer.ListIncidents(pb.ListIncidentsRequest(agencies=[pb.AGENCY_FIRE]))
    assert [i.name for i in by_agency.incidents] == [fire.name]
    box = geo_pb2.BoundingBox(
        low=geo_pb2.LatLng(latitude=52.376, longitude=5.22), high=geo_pb2.LatLng(latitude=52.378, longitude=5.23)
    )
    assert [i.name for i in (await engineer.ListIncidents(pb.ListIncidentsRequest(area=box))).incidents] == [fire.name]
    future = await engineer.ListIncidents(
        pb.ListIncidentsRequest(start_time=ts(datetime.now(UTC) + timedelta(minutes=1)))
    )
    assert list(future.incidents) == []
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await engineer.ListIncidents(
            pb.ListIncidentsRequest(start_time=ts(), end_time=ts(datetime.now(UTC) - timedelta(hours=1)))
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_watch_sends_open_incidents_then_changes(client: Incidents) -> None:
    cleared = await client.report()
    engineer = client.as_("engineer")
    for state in (S.INCIDENT_STATE_ACTIVE, S.INCIDENT_STATE_CLEARED):
        await engineer.TransitionIncident(pb.TransitionIncidentRequest(name=cleared.name, state=state))
    open_one = await client.report()
    watch = client.as_("optimizer").WatchIncidents(pb.WatchIncidentsRequest(types=[pb.INCIDENT_TYPE_COLLISION]))
    first = await asyncio.wait_for(watch.read(), 5)
    assert (first.snapshot, first.incident.name) == (True, open_one.name)
    await client.report(type=pb.INCIDENT_TYPE_HAZARD)  # filtered out
    new = await client.report()
    await engineer.TransitionIncident(pb.TransitionIncidentRequest(name=open_one.name, state=S.INCIDENT_STATE_ACTIVE))
    changes = [await asyncio.wait_for(watch.read(), 5) for _ in range(2)]
    assert [(c.snapshot, c.incident.name, c.incident.state) for c in changes] == [
        (False, new.name, S.INCIDENT_STATE_REPORTED),
        (False, open_one.name, S.INCIDENT_STATE_ACTIVE),
    ]
    watch.cancel()


async def test_watch_drops_changes_the_snapshot_already_holds(client: Incidents, nats_server: NatsServer) -> None:
    """The relay publishes after the commit: a change committed before the snapshot may reach the
    watch after it. Replaying such a change on the bus (the CLEARED event of an incident closed before
    the watch) must not reach the watcher."""
    cleared = await client.report()
    engineer = client.as_("engineer")
    for state in (S.INCIDENT_STATE_ACTIVE, S.INCIDENT_STATE_CLEARED):
        moved = await engineer.TransitionIncident(pb.TransitionIncidentRequest(name=cleared.name, state=state))
    version = moved.incident.version
    subject = f"almere.incidents.v1.incident_state_changed.{cleared.name.removeprefix('incidents/')}"
    nc = await nats.connect(nats_server.url, **nats_server.client_options("incidents"))  # the relay, late
    observer = await nats.connect(nats_server.url, **nats_server.client_options("observer"))
    try:
        is_cleared = lambda m: IncidentEvent.FromString(m.data).incident.version == version  # noqa: E731
        stored = wait_for_last_message(observer.jetstream(), "INCIDENTS", subject, is_cleared)
        late = await asyncio.wait_for(stored, 10)
        watch = client.as_("optimizer").WatchIncidents(pb.WatchIncidentsRequest())
        open_one = await client.report()
        first = await asyncio.wait_for(watch.read(), 5)
        assert (first.snapshot, first.incident.name) in {(True, open_one.name), (False, open_one.name)}
        await nc.publish(subject, late.data, headers=late.headers)
        await nc.flush()
        newer = await client.report()
        following = await asyncio.wait_for(watch.read(), 5)
        assert (following.snapshot, following.incident.name) == (False, newer.name)
        watch.cancel()
    finally:
        await nc.close()
        await observer.close()


async def test_planned_closures_start_and_end_by_themselves(client: Incidents, nats_server: NatsServer) -> None:
    now = datetime.now(UTC)
    festival = pb.PlannedEvent(
        display_name="Festival on the Stadhuisplein",
        closures=[
            pb.ScheduledClosure(
                title="Stadhuisstraat closed",
                network_location=pb.NetworkLocation(edge_id="spoke-w-in"),
                impact=pb.Impact(
                    full_closure=True,
                    expected_start_time=ts(now + timedelta(seconds=1)),
                    expected_end_time=ts(now + timedelta(seconds=2.5)),
                ),
            ),
            pb.ScheduledClosure(
                title="Grote Markt closed tomorrow",
                network_location=pb.NetworkLocation(edge_id="spoke-e-in"),
                impact=pb.Impact(
                    full_closure=True,
                    expected_start_time=ts(now + timedelta(days=1)),
                    expected_end_time=ts(now + timedelta(days=1, hours=8)),
                ),
            ),
        ],
    )
    police = client.as_("police")
    created = (
        await police.CreatePlannedEvent(
            pb.CreatePlannedEventRequest(planned_event_id="festival-2026", planned_event=festival)
        )
    ).planned_event
    assert created.name == "plannedEvents/festival-2026" and len(created.incidents) == 2
    soon, tomorrow = created.incidents
    first = (await police.GetIncident(pb.GetIncidentRequest(name=soon))).incident
    assert (first.state, first.type, first.planned_event) == (
        S.INCIDENT_STATE_CONFIRMED,
        pb.INCIDENT_TYPE_PLANNED_EVENT,
        created.name,
    )
    for _ in range(50):
        first = (await police.GetIncident(pb.GetIncidentRequest(name=soon))).incident
        if first.state == S.INCIDENT_STATE_CLEARED:
            break
        await asyncio.sleep(0.1)
    assert first.state == S.INCIDENT_STATE_CLEARED
    states = [
        e.incident.state
        for s, e in await events_of(nats_server)
        if s.endswith(soon[10:]) and ".incident_state_changed." in s  # type: ignore[attr-defined]
    ]
    assert states == [S.INCIDENT_STATE_ACTIVE, S.INCIDENT_STATE_CLEARED]
    history = await police.ListIncidentHistory(pb.ListIncidentHistoryRequest(name=soon))
    assert [e.actor for e in history.entries] == ["police", "scheduler", "scheduler"]
    cancelled = await police.CancelPlannedEvent(pb.CancelPlannedEventRequest(name=created.name, reason="storm warning"))
    assert cancelled.planned_event.cancelled
    later = (await police.GetIncident(pb.GetIncidentRequest(name=tomorrow))).incident
    assert later.state == S.INCIDENT_STATE_CANCELLED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await police.CancelPlannedEvent(pb.CancelPlannedEventRequest(name=created.name))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_bad_planned_events(client: Incidents) -> None:
    now = datetime.now(UTC)
    past = pb.ScheduledClosure(
        network_location=pb.NetworkLocation(edge_id="spoke-w-in"),
        impact=pb.Impact(
            expected_start_time=ts(now - timedelta(hours=3)), expected_end_time=ts(now - timedelta(hours=1))
        ),
    )
    open_ended = pb.ScheduledClosure(
        network_location=pb.NetworkLocation(edge_id="spoke-w-in"), impact=pb.Impact(full_closure=True)
    )
    for closures, message in (([past], "already over"), ([open_ended], "expected_start_time"), ([], "1 to 200")):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.as_("engineer").CreatePlannedEvent(
                pb.CreatePlannedEventRequest(
                    planned_event_id="x", planned_event=pb.PlannedEvent(display_name="X", closures=closures)
                )
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await client.as_("fire").CreatePlannedEvent(pb.CreatePlannedEventRequest(planned_event_id="x"))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    listed = await client.as_("engineer").ListPlannedEvents(pb.ListPlannedEventsRequest())
    assert list(listed.planned_events) == []
