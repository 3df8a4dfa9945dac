"""No side doors: every read path of an incident (Get, List, Watch, History) shows a caller the same
cut of it. A police action's notes, and the reasons and actors of its history, reach public safety
only; the engineer, who sees everything of other incidents, and an operator, who sees no notes of
any, get neither, whichever way they read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from almere.incidents.v1 import incidents_pb2 as pb
from google.protobuf.field_mask_pb2 import FieldMask

from tests.integration.helpers import Incidents

NOTES = "plain-clothes arrest at the Forum, suspect armed"
REASON = "unit 12 in position, closing the approach"
# caller: sees the restricted parts of a police action, may read histories at all
READERS = {"police": (True, True), "fire": (True, True), "engineer": (False, True), "operator": (False, False)}


@pytest.fixture
async def client(incidents: str, tokens: dict[str, str]) -> AsyncIterator[Incidents]:
    async with grpc.aio.insecure_channel(incidents) as channel:
        yield Incidents(channel, tokens)


async def _police_action(client: Incidents) -> pb.Incident:
    """A police action reported by the police and confirmed with a reason."""
    incident = await client.report(type=pb.INCIDENT_TYPE_POLICE_ACTION, notes=NOTES)
    await client.as_("police").TransitionIncident(
        pb.TransitionIncidentRequest(name=incident.name, state=pb.INCIDENT_STATE_CONFIRMED, reason=REASON)
    )
    return incident


async def _watched(client: Incidents, caller: str, name: str) -> pb.Incident:
    watch = client.as_(caller).WatchIncidents(pb.WatchIncidentsRequest())
    try:
        while True:
            message = await asyncio.wait_for(watch.read(), 5)
            if message.incident.name == name:
                return message.incident  # type: ignore[no-any-return]
    finally:
        watch.cancel()


@pytest.mark.parametrize("caller", list(READERS))
async def test_get_list_and_watch_cut_a_police_action_alike(client: Incidents, caller: str) -> None:
    action = await _police_action(client)
    me = client.as_(caller)
    views = {
        "get": (await me.GetIncident(pb.GetIncidentRequest(name=action.name))).incident,
        "list": next(i for i in (await me.ListIncidents(pb.ListIncidentsRequest())).incidents if i.name == action.name),
        "watch": await _watched(client, caller, action.name),
    }
    allowed, _ = READERS[caller]
    for path, view in views.items():
        assert view.state == pb.INCIDENT_STATE_CONFIRMED, path  # the incident itself: everyone
        assert (view.notes, view.reporter) == ((NOTES, "police") if allowed else ("", "")), (caller, path)


@pytest.mark.parametrize("caller", list(READERS))
async def test_history_cuts_a_police_action_as_the_incident_is_cut(client: Incidents, caller: str) -> None:
    action = await _police_action(client)
    request = pb.ListIncidentHistoryRequest(name=action.name)
    allowed, reads_histories = READERS[caller]
    if not reads_histories:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await client.as_(caller).ListIncidentHistory(request)
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        return
    entries = (await client.as_(caller).ListIncidentHistory(request)).entries
    # What happened, in order: everyone who reads histories.
    assert [(e.version, e.action, e.actor_role, e.to_state) for e in entries] == [
        (1, "reported", "police", pb.INCIDENT_STATE_REPORTED),
        (2, "transitioned", "police", pb.INCIDENT_STATE_CONFIRMED),
    ]
    # Who did it and why: as restricted as the incident's reporter and notes.
    expected = [("police", ""), ("police", REASON)] if allowed else [("", ""), ("", "")]
    assert [(e.actor, e.reason) for e in entries] == expected, caller


async def test_an_engineer_reads_the_whole_history_of_other_incidents(client: Incidents) -> None:
    collision = await client.report(notes="two cars")
    await client.as_("police").TransitionIncident(
        pb.TransitionIncidentRequest(name=collision.name, state=pb.INCIDENT_STATE_CONFIRMED, reason="seen by camera")
    )
    entries = (
        await client.as_("engineer").ListIncidentHistory(pb.ListIncidentHistoryRequest(name=collision.name))
    ).entries
    assert [(e.actor, e.reason) for e in entries] == [("police", ""), ("police", "seen by camera")]


async def test_retyping_as_a_police_action_hides_its_earlier_history(client: Incidents) -> None:
    """The incident's type now decides for its whole history: what was written before it became a
    police action is no longer the engineer's to read (as its notes are not)."""
    incident = await client.report(notes="looks like a collision")
    await client.as_("police").TransitionIncident(
        pb.TransitionIncidentRequest(name=incident.name, state=pb.INCIDENT_STATE_CONFIRMED, reason=REASON)
    )
    await client.as_("police").UpdateIncident(
        pb.UpdateIncidentRequest(
            incident=pb.Incident(name=incident.name, type=pb.INCIDENT_TYPE_POLICE_ACTION),
            update_mask=FieldMask(paths=["type"]),
        )
    )
    entries = (
        await client.as_("engineer").ListIncidentHistory(pb.ListIncidentHistoryRequest(name=incident.name))
    ).entries
    assert len(entries) == 3 and all((e.actor, e.reason) == ("", "") for e in entries)


async def test_the_public_sees_only_confirmed_open_incidents_and_no_police_actions(client: Incidents) -> None:
    """The open-data reader (role public, the gateway's feeds) gets from the service itself only what
    the feeds may publish, so a leaked public token shows no more than the feeds do."""
    police_action = await _police_action(client)
    unconfirmed = await client.report(notes=NOTES)  # a collision only reported so far
    confirmed = await client.report(notes=NOTES)
    cleared = await client.report()
    for incident, states in (
        (confirmed, [pb.INCIDENT_STATE_CONFIRMED]),
        (cleared, [pb.INCIDENT_STATE_ACTIVE, pb.INCIDENT_STATE_CLEARING, pb.INCIDENT_STATE_CLEARED]),
    ):
        for state in states:
            await client.as_("police").TransitionIncident(pb.TransitionIncidentRequest(name=incident.name, state=state))
    public = client.as_("public")
    listed = (await public.ListIncidents(pb.ListIncidentsRequest())).incidents
    assert [i.name for i in listed] == [confirmed.name] and not listed[0].notes and not listed[0].reporter
    asked = pb.ListIncidentsRequest(types=[pb.INCIDENT_TYPE_POLICE_ACTION], states=[pb.INCIDENT_STATE_REPORTED])
    assert not (await public.ListIncidents(asked)).incidents  # asking for more gives nothing more
    assert (await public.GetIncident(pb.GetIncidentRequest(name=confirmed.name))).incident.name == confirmed.name
    for hidden in (police_action, unconfirmed, cleared):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await public.GetIncident(pb.GetIncidentRequest(name=hidden.name))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await anext(aiter(public.WatchIncidents(pb.WatchIncidentsRequest())))
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
