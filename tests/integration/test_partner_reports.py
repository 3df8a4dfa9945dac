"""A private security firm's incident reports (role `partner:firm-a`) on a real database and
nats-server: a report starts UNVERIFIED, public safety sees it at once and nobody else does; the
police verify it (then it is an incident like any other, its partner's parts shown as the partner's
agreement allows) or reject it with a reason the partner reads; partners never see each other's
reports nor police notes; bad reports are refused with nothing written; reads are audited."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from almere.incidents.v1 import incidents_pb2 as pb
from almere.partners.v1 import partners_pb2 as ppb
from google.protobuf.field_mask_pb2 import FieldMask
from sqlmodel import Session

from apps.natsd import NatsServer
from services.common.auth import Identity, Role
from services.common.clock import to_timestamp
from services.common.db import create_tables, make_engine
from services.common.retention import Expire
from services.incidents import usecases
from services.incidents.models import TABLES
from services.incidents.service import SPEC as INCIDENTS
from services.partners.service import SPEC as PARTNERS
from tests.integration.helpers import Incidents, Partners, read_stream

S = pb.IncidentState
SAFETY = "public-safety"
TRAFFIC = "traffic-management"
SEEN = "Shopping trolleys set alight across the Hogering, two lanes blocked"
# Who must not know of a report before the police verified it.
OUTSIDERS = ("engineer", "optimizer", "sim", "operator", "other_partner")


@dataclass(kw_only=True)
class City:
    incidents: Incidents
    partners: Partners


async def _status(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


async def _register(partners: Partners, partner_id: str, *, reports_to: list[int]) -> None:
    await partners.as_("engineer").CreatePartner(
        ppb.CreatePartnerRequest(
            partner_id=partner_id,
            partner=ppb.Partner(display_name=partner_id.upper(), kind=ppb.PARTNER_KIND_SECURITY_FIRM),
        )
    )
    await partners.as_("engineer").SetAgreement(
        ppb.SetAgreementRequest(
            name=f"partners/{partner_id}/agreements/incident-reports",
            agreement=ppb.Agreement(
                audiences=[ppb.AudienceTerms(audience=a, detail=ppb.DETAIL_RAW) for a in reports_to],
                retention_days=90,
                purposes=[SAFETY, TRAFFIC],
            ),
        )
    )


@pytest.fixture
async def city(
    start_service: Callable[..., Awaitable[str]], network_file: Any, tokens: dict[str, str]
) -> AsyncIterator[City]:
    """Security firm firm-a (the test partner's), whose reports its agreement shares with public safety
    and engineers."""
    async with (
        grpc.aio.insecure_channel(await start_service(INCIDENTS, network_file=network_file)) as i,
        grpc.aio.insecure_channel(await start_service(PARTNERS)) as p,
    ):
        city = City(incidents=Incidents(i, tokens), partners=Partners(p, tokens))
        await _register(city.partners, "firm-a", reports_to=[ppb.AUDIENCE_PUBLIC_SAFETY, ppb.AUDIENCE_ENGINEER])
        yield city


async def _firm_b(city: City) -> None:
    """The other partner's firm, which shares its reports with public safety only."""
    await _register(city.partners, "firm-b", reports_to=[ppb.AUDIENCE_PUBLIC_SAFETY])


async def _report(city: City, caller: str = "partner", **fields: Any) -> pb.Incident:
    """A partner's report, once the incident service knows the partner (from the PARTNERS stream)."""
    fields = {"type": pb.INCIDENT_TYPE_HAZARD, "partner_report": pb.PartnerReport(description=SEEN), **fields}
    deadline = time.monotonic() + 5
    while True:
        try:
            return await city.incidents.report(caller, **fields)
        except grpc.aio.AioRpcError as err:
            if "not registered" not in (err.details() or "") or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


def _get(city: City, caller: str, name: str, purpose: str = "") -> Awaitable[pb.GetIncidentResponse]:
    return city.incidents.as_(caller, purpose=purpose).GetIncident(pb.GetIncidentRequest(name=name))


async def _listed(city: City, caller: str, purpose: str = "") -> list[str]:
    reply = await city.incidents.as_(caller, purpose=purpose).ListIncidents(pb.ListIncidentsRequest())
    return [i.name for i in reply.incidents]


def _move(city: City, caller: str, name: str, state: int, reason: str = "") -> Awaitable[Any]:
    return city.incidents.as_(caller).TransitionIncident(
        pb.TransitionIncidentRequest(name=name, state=state, reason=reason)  # type: ignore[arg-type]
    )


async def test_a_report_waits_for_the_police_and_then_is_an_incident_like_any_other(
    city: City, nats_server: NatsServer
) -> None:
    report = await _report(city, title="Fire on the Hogering")
    assert (report.state, report.reporting_agency, report.reporter) == (
        S.INCIDENT_STATE_UNVERIFIED,
        pb.AGENCY_PARTNER,
        "partner",
    )
    assert (report.partner_report.partner, report.partner_report.trust_level, report.partner_report.description) == (
        "partners/firm-a",
        ppb.TRUST_LEVEL_BASIC,
        SEEN,
    )
    # Public safety sees it at once, with the partner's words; nobody else knows of it.
    for caller in ("police", "fire", "ems"):
        seen = (await _get(city, caller, report.name, SAFETY)).incident
        assert (seen.state, seen.partner_report.description) == (S.INCIDENT_STATE_UNVERIFIED, SEEN), caller
        assert report.name in await _listed(city, caller, SAFETY)
    for caller in OUTSIDERS:
        assert (await _status(_get(city, caller, report.name, TRAFFIC)))[0] == grpc.StatusCode.NOT_FOUND, caller
        assert report.name not in await _listed(city, caller, TRAFFIC), caller
        code, _ = await _status(_move(city, caller, report.name, S.INCIDENT_STATE_CONFIRMED))
        assert code in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED), caller
    assert await _listed(city, "public") == []
    assert await _listed(city, "partner") == [report.name]

    # Only the police verify: not fire, not the partner itself.
    assert await _status(_move(city, "fire", report.name, S.INCIDENT_STATE_CONFIRMED)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        f"{report.name} is a partner's report: only the police verify or reject it",
    )
    assert await _status(_move(city, "partner", report.name, S.INCIDENT_STATE_ACTIVE)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "a partner may only withdraw its report (CANCELLED); the police verify or reject it",
    )
    verified = (await _move(city, "police", report.name, S.INCIDENT_STATE_ACTIVE, "patrol on site")).incident
    assert verified.state == S.INCIDENT_STATE_ACTIVE
    await city.incidents.as_("police").UpdateIncident(
        pb.UpdateIncidentRequest(
            incident=pb.Incident(name=report.name, notes="suspects known to us"), update_mask=FieldMask(paths=["notes"])
        )
    )

    # Now everyone sees the incident; the partner's parts as its agreement says.
    engineer = (await _get(city, "engineer", report.name, TRAFFIC)).incident
    assert (engineer.partner_report.partner, engineer.partner_report.description) == ("partners/firm-a", SEEN)
    optimizer = (await _get(city, "optimizer", report.name, TRAFFIC)).incident
    assert optimizer.state == S.INCIDENT_STATE_ACTIVE and not optimizer.partner_report.partner
    assert optimizer.partner_report.withheld and "does not share it with role optimizer" in (
        optimizer.partner_report.withheld_reason
    )
    public = (await _get(city, "public", report.name)).incident
    assert public.partner_report.withheld and not public.partner_report.description and not public.notes
    no_purpose = (await _get(city, "engineer", report.name)).incident
    assert no_purpose.partner_report.withheld and "no purpose declared" in no_purpose.partner_report.withheld_reason
    # The partner sees its report and what became of it, never the police's notes.
    own = (await _get(city, "partner", report.name)).incident
    assert (own.state, own.partner_report.description, own.notes) == (S.INCIDENT_STATE_ACTIVE, SEEN, "")
    assert (await _get(city, "police", report.name, SAFETY)).incident.notes == "suspects known to us"
    assert (await _status(_get(city, "other_partner", report.name)))[0] == grpc.StatusCode.NOT_FOUND

    # On the bus: the report as the optimizer may know it, without the partner's words.
    events = await read_stream(nats_server, "almere.incidents.v1.>", stream="INCIDENTS")
    assert [(s.split(".")[3], e.incident.state) for s, e in events] == [  # type: ignore[attr-defined]
        ("incident_reported", S.INCIDENT_STATE_UNVERIFIED),
        ("incident_state_changed", S.INCIDENT_STATE_ACTIVE),
        ("incident_updated", S.INCIDENT_STATE_ACTIVE),
    ]
    first = events[0][1].incident  # type: ignore[attr-defined]
    assert (first.partner_report.partner, first.partner_report.description, first.reporter) == (
        "partners/firm-a",
        "",
        "",
    )
    assert first.title == "" and events[1][1].incident.title == "Fire on the Hogering"  # type: ignore[attr-defined]

    # Every read of firm-a's report by somebody else is in firm-a's audit.
    async def audited() -> list[tuple[str, str, int]]:
        reply = await city.partners.as_("partner").ListAccessRecords(
            ppb.ListAccessRecordsRequest(parent="partners/firm-a", page_size=100)
        )
        return [(r.role, r.method, r.outcome) for r in reply.records]

    deadline = time.monotonic() + 5
    while ("optimizer", "GetIncident", ppb.ACCESS_OUTCOME_WITHHELD) not in (records := await audited()):
        assert time.monotonic() < deadline, records
        await asyncio.sleep(0.1)
    assert ("police", "GetIncident", ppb.ACCESS_OUTCOME_FULL) in records
    assert ("engineer", "GetIncident", ppb.ACCESS_OUTCOME_FULL) in records
    assert ("engineer", "GetIncident", ppb.ACCESS_OUTCOME_REFUSED) in records
    assert ("public", "GetIncident", ppb.ACCESS_OUTCOME_WITHHELD) in records
    assert not [r for r in records if r[0] == "partner"], "the partner's own reads are not under its agreement"


async def test_a_rejected_report_tells_the_partner_why_and_stays_with_public_safety(city: City) -> None:
    report = await _report(city)
    assert await _status(_move(city, "police", report.name, S.INCIDENT_STATE_REJECTED)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "reason is required to reject a partner's report: the partner reads it",
    )
    rejected = (
        await _move(city, "police", report.name, S.INCIDENT_STATE_REJECTED, "camera shows a clear road")
    ).incident
    assert rejected.state == S.INCIDENT_STATE_REJECTED
    own = (await _get(city, "partner", report.name)).incident
    assert (own.state, own.partner_report.rejection_reason) == (S.INCIDENT_STATE_REJECTED, "camera shows a clear road")
    assert (await _status(_get(city, "engineer", report.name, TRAFFIC)))[0] == grpc.StatusCode.NOT_FOUND
    history = await city.incidents.as_("police").ListIncidentHistory(pb.ListIncidentHistoryRequest(name=report.name))
    assert [(e.actor_role, e.to_state) for e in history.entries] == [
        ("partner:firm-a", S.INCIDENT_STATE_UNVERIFIED),
        ("police", S.INCIDENT_STATE_REJECTED),
    ]
    code, _ = await _status(
        city.incidents.as_("engineer").ListIncidentHistory(pb.ListIncidentHistoryRequest(name=report.name))
    )
    assert code == grpc.StatusCode.NOT_FOUND
    code, message = await _status(_move(city, "police", report.name, S.INCIDENT_STATE_CONFIRMED))
    assert (code, message) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "cannot go from REJECTED to CONFIRMED; allowed: none (terminal)",
    )

    withdrawn = await _report(city)
    assert (await _move(city, "partner", withdrawn.name, S.INCIDENT_STATE_CANCELLED, "our mistake")).incident.state == (
        S.INCIDENT_STATE_CANCELLED
    )
    # Withdrawn before the police verified it: still nobody else's to know of.
    assert (await _status(_get(city, "engineer", withdrawn.name, TRAFFIC)))[0] == grpc.StatusCode.NOT_FOUND
    cancelled = await city.incidents.as_("engineer", purpose=TRAFFIC).ListIncidents(
        pb.ListIncidentsRequest(states=[S.INCIDENT_STATE_CANCELLED])
    )
    assert withdrawn.name not in [i.name for i in cancelled.incidents]
    again = await _status(_move(city, "partner", withdrawn.name, S.INCIDENT_STATE_CANCELLED, "again"))
    assert again == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "cannot go from CANCELLED to CANCELLED; allowed: none (terminal)",
    )
    # Another partner cannot touch it, nor learn that it exists.
    await _firm_b(city)
    other = await _report(city, "other_partner")
    assert (await _status(_move(city, "partner", other.name, S.INCIDENT_STATE_CANCELLED)))[0] == (
        grpc.StatusCode.NOT_FOUND
    )
    assert await _listed(city, "other_partner") == [other.name]


@pytest.mark.parametrize(
    ("caller", "fields", "code", "message"),
    [
        (
            "partner",
            {"type": pb.INCIDENT_TYPE_POLICE_ACTION},
            grpc.StatusCode.INVALID_ARGUMENT,
            "a partner does not report type INCIDENT_TYPE_POLICE_ACTION",
        ),
        (
            "partner",
            {"notes": "we think it was the neighbours"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "notes are the responders'; put what you saw in partner_report.description",
        ),
        (
            "partner",
            {"partner_report": pb.PartnerReport()},
            grpc.StatusCode.INVALID_ARGUMENT,
            "partner_report.description is required (at most 2000 characters)",
        ),
        (
            "partner",
            {"partner_report": pb.PartnerReport(description="x" * 2001)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "partner_report.description is required (at most 2000 characters)",
        ),
        (
            "police",
            {},
            grpc.StatusCode.INVALID_ARGUMENT,
            "partner_report is set from a partner's own report (role partner)",
        ),
        (
            "operator",
            {},
            grpc.StatusCode.PERMISSION_DENIED,
            "",
        ),
    ],
)
async def test_a_bad_report_is_refused_and_nothing_written(
    city: City, nats_server: NatsServer, caller: str, fields: dict[str, Any], code: grpc.StatusCode, message: str
) -> None:
    await _report(city)  # the partner is known to the incident service
    before = await read_stream(nats_server, "almere.incidents.v1.>", stream="INCIDENTS")
    got, details = await _status(_report(city, caller, **fields))
    assert got == code and message in details, details
    assert len(await _listed(city, "police", SAFETY)) == 1
    await asyncio.sleep(0.3)  # what the relay would have published by now
    after = await read_stream(nats_server, "almere.incidents.v1.>", "after", stream="INCIDENTS")
    assert len(after) == len(before)


async def test_an_unregistered_or_suspended_partner_cannot_report(city: City) -> None:
    await _report(city)  # the incident service has replayed the registry
    assert await _status(city.incidents.report("other_partner", partner_report=pb.PartnerReport(description=SEEN))) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "partner 'firm-b' is not registered with the city (partners/firm-b)",
    )
    await _firm_b(city)
    await _report(city, "other_partner")
    await city.partners.as_("engineer").SuspendPartner(
        ppb.SuspendPartnerRequest(name="partners/firm-b", reason="contract under review")
    )
    deadline = time.monotonic() + 5
    while (status := await _status(_report(city, "other_partner")))[0] == grpc.StatusCode.OK:
        assert time.monotonic() < deadline, "the suspension did not reach the incident service"
        await asyncio.sleep(0.05)
    assert status[0] == grpc.StatusCode.PERMISSION_DENIED and "suspended" in status[1], status


async def test_watches_show_a_report_to_public_safety_at_once_and_to_others_once_verified(city: City) -> None:
    await _firm_b(city)
    first = await _report(city)  # the partner is known before the watches start
    watches = {
        caller: city.incidents.as_(caller, purpose=SAFETY if caller == "police" else TRAFFIC).WatchIncidents(
            pb.WatchIncidentsRequest()
        )
        for caller in ("police", "engineer", "partner", "other_partner")
    }

    async def next_of(caller: str, name: str, within_s: float = 5) -> pb.Incident:
        while True:
            reply = await asyncio.wait_for(watches[caller].read(), within_s)
            if reply.incident.name == name:
                return reply.incident

    # Each watch is live once it has sent something: the partner its own report in the snapshot, the
    # city's callers a police incident reported after they started.
    assert (await next_of("partner", first.name)).partner_report.description == SEEN
    marker = await city.incidents.report("police")
    for caller in ("police", "engineer"):
        await next_of(caller, marker.name)

    report = await _report(city)

    police = await next_of("police", report.name)
    assert (police.state, police.partner_report.description) == (S.INCIDENT_STATE_UNVERIFIED, SEEN)
    own = await next_of("partner", report.name)
    assert (own.state, own.partner_report.description) == (S.INCIDENT_STATE_UNVERIFIED, SEEN)
    await _move(city, "police", report.name, S.INCIDENT_STATE_CONFIRMED, "seen on camera")
    engineer = await next_of("engineer", report.name)
    assert (engineer.state, engineer.partner_report.description) == (S.INCIDENT_STATE_CONFIRMED, SEEN)
    assert (await next_of("partner", report.name)).state == S.INCIDENT_STATE_CONFIRMED
    with pytest.raises(asyncio.TimeoutError):
        await next_of("other_partner", report.name, within_s=1)
    for watch in watches.values():
        watch.cancel()


async def test_without_an_agreement_a_partners_words_stay_with_it_and_the_police(city: City) -> None:
    await city.partners.as_("engineer").CreatePartner(
        ppb.CreatePartnerRequest(
            partner_id="firm-b", partner=ppb.Partner(display_name="FIRM-B", kind=ppb.PARTNER_KIND_BUSINESS)
        )
    )
    report = await _report(city, "other_partner")
    assert (await _get(city, "police", report.name)).incident.partner_report.description == SEEN
    await _move(city, "police", report.name, S.INCIDENT_STATE_CONFIRMED, "seen on camera")
    engineer = (await _get(city, "engineer", report.name, TRAFFIC)).incident
    assert engineer.state == S.INCIDENT_STATE_CONFIRMED and not engineer.partner_report.description
    assert engineer.partner_report.withheld_reason == (
        "partners/firm-b has set no incident-reports agreement: it shares them with nobody yet"
    )
    assert not engineer.reporter, "who reported it is the partner's too"


def test_retention_takes_the_partners_words_from_old_closed_reports(tmp_path: Any) -> None:
    """The retention's deletion on a real SQLite file: the incident stays in the city's record, the
    partner's words and who reported it go, once, and only from reports that are over."""
    engine = make_engine(f"sqlite:///{tmp_path / 'incidents.db'}")
    create_tables(engine, TABLES)
    old = datetime.now(UTC) - timedelta(days=40)
    names = []
    with Session(engine) as session:
        for n, state in enumerate((S.INCIDENT_STATE_CLEARED, S.INCIDENT_STATE_ACTIVE)):
            incident = pb.Incident(
                name=f"incidents/inc-{n}",
                type=pb.INCIDENT_TYPE_HAZARD,
                severity=pb.SEVERITY_MINOR,
                state=state,
                reporter="firm-a-desk",
                version=1,
                create_time=to_timestamp(old),
                update_time=to_timestamp(old),
                partner_report=pb.PartnerReport(partner="partners/firm-a", description=SEEN),
            )
            identity = Identity("firm-a-desk", Role.PARTNER, "firm-a")
            usecases.report_incidents(
                session, [usecases.Report(identity=identity, request_id=str(n), incident=incident)]
            )
            names.append(incident.name)
        session.commit()
        expire = Expire(partner_id="firm-a", before=datetime.now(UTC) - timedelta(days=30))
        assert usecases.expire_reports(session, [expire]) == [1], "the cleared one only: the active one is not over"
        assert usecases.expire_reports(session, [expire]) == [0], "nothing twice"
        session.commit()
    closed, active = (usecases.get_incident(engine, name.removeprefix("incidents/")) for name in names)
    assert (closed.partner_report.description, closed.reporter, closed.partner_report.partner) == (
        "",
        "",
        "partners/firm-a",
    )
    assert active.partner_report.description == SEEN
    engine.dispose()
