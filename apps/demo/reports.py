"""Demo scene 4, second half: a private security firm's guards see a car burning across the Hogering
and report it. The report waits UNVERIFIED: the police see it at once, the control room does not and
the optimizer does not act on it. The police verify it; from then on it is an incident like any
other and the optimizer plans with the blocked lane. The firm reads what became of its report (not
the police's notes) and who read it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
from almere.incidents.v1 import incidents_pb2 as pb
from almere.incidents.v1 import incidents_pb2_grpc
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.optimizer.v1 import optimizer_pb2_grpc
from almere.partners.v1 import partners_pb2 as ppb
from almere.partners.v1 import partners_pb2_grpc
from google.protobuf.field_mask_pb2 import FieldMask

from apps.demo.incidents import COLLISION_AT, STATE
from apps.demo.partners import as_caller
from services.common.auth import TRAFFIC_MANAGEMENT

FIRM = "demo-partner"  # the development caller `partner` is partner:demo-partner
PUBLIC_SAFETY = "public-safety"
TERMS = ppb.Agreement(
    audiences=[
        ppb.AudienceTerms(audience=ppb.AUDIENCE_PUBLIC_SAFETY, detail=ppb.DETAIL_RAW),
        ppb.AudienceTerms(audience=ppb.AUDIENCE_OPTIMIZER, detail=ppb.DETAIL_RAW),
        ppb.AudienceTerms(audience=ppb.AUDIENCE_ENGINEER, detail=ppb.DETAIL_RAW),
    ],
    retention_days=180,
    purposes=[PUBLIC_SAFETY, TRAFFIC_MANAGEMENT],
    change_note="our guards' reports: to the police, and to the city for traffic once verified",
)
SEEN = "Car on fire on the right lane of the Hogering by the Forum garage exit; our guard keeps people away."
# Past the burning car: from the ring's south-west leg to its north-east leg, along the Hogering.
TRIP = opb.ComputeTravelTimesRequest(origin_edge_id="ring-s-w", destination_edge_ids=["ring-n-e"])


async def _travel(optimizer: optimizer_pb2_grpc.OptimizerServiceAsyncStub, token: str) -> tuple[float, list[str]]:
    """The optimizer's drive time for TRIP and the incidents it sees acting on the Hogering."""
    times = await optimizer.ComputeTravelTimes(TRIP, metadata=as_caller(token))
    state = await optimizer.GetNetworkState(
        opb.GetNetworkStateRequest(edge_ids=["ring-w-n"]), metadata=as_caller(token)
    )
    return times.seconds[0], list(state.edges[0].incidents)


async def play(
    *,
    partners: grpc.aio.Channel,
    incidents: grpc.aio.Channel,
    optimizer: grpc.aio.Channel,
    tokens: dict[str, str],
    say: Callable[[str], None],
) -> bool:
    async with partners, incidents, optimizer:
        registry = partners_pb2_grpc.PartnerServiceStub(partners)
        reports = incidents_pb2_grpc.IncidentServiceStub(incidents)
        model = optimizer_pb2_grpc.OptimizerServiceStub(optimizer)
        await registry.CreatePartner(
            ppb.CreatePartnerRequest(
                partner_id=FIRM,
                partner=ppb.Partner(
                    display_name="Demo Security B.V.",
                    kind=ppb.PARTNER_KIND_SECURITY_FIRM,
                    contacts=[ppb.Contact(display_name="Control room", phone="+31 36 000 0000")],
                    trust_level=ppb.TRUST_LEVEL_BASIC,
                ),
            ),
            metadata=as_caller(tokens["engineer"]),
        )
        say(f"[engineer] registered security firm {FIRM}, trust BASIC: its reports act once the police verify them")
        agreement = (
            await registry.SetAgreement(
                ppb.SetAgreementRequest(name=f"partners/{FIRM}/agreements/incident-reports", agreement=TERMS),
                metadata=as_caller(tokens["partner"]),
            )
        ).agreement
        say(f"[security firm] set {agreement.name} revision {agreement.revision}: {agreement.change_note}")
        before, _ = await _travel(model, tokens["engineer"])

        request = pb.ReportIncidentRequest(
            request_id="demo-guard-report-1",
            incident=pb.Incident(
                type=pb.INCIDENT_TYPE_FIRE,
                severity=pb.SEVERITY_MAJOR,
                title="Car fire on the Hogering",
                location=COLLISION_AT,
                impact=pb.Impact(closed_lanes=[0], speed_limit_kmh=20),
                partner_report=pb.PartnerReport(description=SEEN),
            ),
        )
        for _ in range(100):  # the registry reaches the incident service through the PARTNERS stream
            try:
                report = (await reports.ReportIncident(request, metadata=as_caller(tokens["partner"]))).incident
                break
            except grpc.aio.AioRpcError as err:
                if "not registered" not in (err.details() or ""):
                    raise
                await asyncio.sleep(0.05)
        say(
            f"[security firm] reported {report.name} on {report.network_location.edge_id}: "
            f"{STATE[report.state]}, right lane blocked, {report.partner_report.description!r}"
        )
        police = (
            await reports.GetIncident(
                pb.GetIncidentRequest(name=report.name), metadata=as_caller(tokens["police"], PUBLIC_SAFETY)
            )
        ).incident
        say(f"[police] see it at once: {STATE[police.state]}, from {police.partner_report.partner}")
        listed = await reports.ListIncidents(
            pb.ListIncidentsRequest(states=[pb.INCIDENT_STATE_UNVERIFIED]), metadata=as_caller(tokens["engineer"])
        )
        say(f"[control room] unverified reports it sees: {len(listed.incidents)}")
        await asyncio.sleep(0.5)  # what the optimizer would make of it, had it acted
        unverified, ignored = await _travel(model, tokens["engineer"])
        say(f"[optimizer] drive time ring-s-w -> ring-n-e {unverified:.0f} s, incidents on the Hogering {ignored}")

        await reports.TransitionIncident(
            pb.TransitionIncidentRequest(
                name=report.name, state=pb.INCIDENT_STATE_ACTIVE, reason="patrol on site confirms: lane blocked"
            ),
            metadata=as_caller(tokens["police"]),
        )
        await reports.UpdateIncident(
            pb.UpdateIncidentRequest(
                incident=pb.Incident(name=report.name, notes="Arson suspected; detectives informed."),
                update_mask=FieldMask(paths=["notes"]),
            ),
            metadata=as_caller(tokens["police"]),
        )
        say("[police] verified it: ACTIVE ('patrol on site confirms: lane blocked'), and added their notes")
        for _ in range(100):  # the optimizer learns it from the INCIDENTS stream
            verified, acting = await _travel(model, tokens["engineer"])
            if acting:
                break
            await asyncio.sleep(0.05)
        say(
            f"[optimizer] acts on it: incidents on the Hogering {acting}; drive time ring-s-w -> ring-n-e "
            f"{before:.0f} s -> {verified:.0f} s (one lane at 20 km/h past the fire)"
        )
        engineer = (
            await reports.GetIncident(
                pb.GetIncidentRequest(name=report.name), metadata=as_caller(tokens["engineer"], TRAFFIC_MANAGEMENT)
            )
        ).incident
        say(f"[control room] now sees {report.name}: {STATE[engineer.state]}, {engineer.partner_report.description!r}")
        own = await reports.GetIncident(pb.GetIncidentRequest(name=report.name), metadata=as_caller(tokens["partner"]))
        say(
            f"[security firm] its report is {STATE[own.incident.state]}; "
            f"police notes shown to it: {own.incident.notes!r}"
        )
        for _ in range(100):  # the audit arrives through the PARTNER_ACCESS stream
            records = (
                await registry.ListAccessRecords(
                    ppb.ListAccessRecordsRequest(parent=f"partners/{FIRM}"), metadata=as_caller(tokens["partner"])
                )
            ).records
            if {"police", "engineer"} <= {r.role for r in records}:
                break
            await asyncio.sleep(0.05)
        for record in reversed(records):
            outcome = ppb.AccessOutcome.Name(record.outcome).removeprefix("ACCESS_OUTCOME_").lower()
            say(
                f"[security firm's audit] {record.caller} ({record.role}) {record.service}.{record.method} "
                f"for {record.purpose or 'no purpose'}: {outcome}" + (f" ({record.reason})" if record.reason else "")
            )
        waited = not ignored and unverified == before
        return waited and bool(acting) and verified > before and not own.incident.notes
