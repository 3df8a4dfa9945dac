"""Demo scene: a private garage operator shares its counts on its own terms. It gives the public feed
its garages' status only, five minutes late, and the optimizer the raw counts for traffic
management; police get nothing of them. The scene reads the garage as each would, then lists the
operator's audit of who read it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc
import httpx
from almere.parking.v1 import parking_pb2 as pb
from almere.parking.v1 import parking_pb2_grpc
from almere.partners.v1 import partners_pb2 as ppb
from almere.partners.v1 import partners_pb2_grpc

from apps.demo.parking import GARAGE
from services.common.auth import PURPOSE_METADATA, TRAFFIC_MANAGEMENT

OPERATOR = "demo-operator"
TERMS = ppb.Agreement(
    audiences=[
        ppb.AudienceTerms(audience=ppb.AUDIENCE_OPTIMIZER, detail=ppb.DETAIL_RAW),
        ppb.AudienceTerms(audience=ppb.AUDIENCE_ENGINEER, detail=ppb.DETAIL_ROUNDED, round_to=10),
        ppb.AudienceTerms(audience=ppb.AUDIENCE_PUBLIC, detail=ppb.DETAIL_STATUS_ONLY, delay_minutes=5),
    ],
    retention_days=90,
    purposes=[TRAFFIC_MANAGEMENT],
    change_note="counts for traffic management; the public sees the status, five minutes late",
)
STATUS = {v: n.removeprefix("OCCUPANCY_STATUS_") for n, v in pb.OccupancyStatus.items()}


def as_caller(token: str, purpose: str = "") -> tuple[tuple[str, str], ...]:
    declared = ((PURPOSE_METADATA, purpose),) if purpose else ()
    return (("authorization", f"Bearer {token}"), *declared)


def _shown(occupancy: pb.Occupancy) -> str:
    if occupancy.sharing.counts_withheld:
        return f"status {STATUS[occupancy.status]}, no counts ({occupancy.sharing.reason})"
    return f"{occupancy.occupied_spaces}/{occupancy.capacity} occupied" + (
        f" ({occupancy.sharing.reason})" if occupancy.sharing.reason else ""
    )


async def play(
    *,
    partners: grpc.aio.Channel,
    parking: grpc.aio.Channel,
    gateway: str,
    tokens: dict[str, str],
    say: Callable[[str], None],
) -> bool:
    async with partners, parking:
        registry = partners_pb2_grpc.PartnerServiceStub(partners)
        garages = parking_pb2_grpc.ParkingServiceStub(parking)
        await registry.CreatePartner(
            ppb.CreatePartnerRequest(
                partner_id=OPERATOR,
                partner=ppb.Partner(
                    display_name="Demo Parking B.V.",
                    kind=ppb.PARTNER_KIND_GARAGE_OPERATOR,
                    contacts=[ppb.Contact(display_name="Data desk", email="data@demo-parking.example")],
                ),
            ),
            metadata=as_caller(tokens["engineer"]),
        )
        say(f"[engineer] registered partner {OPERATOR} (the operator of the scene-1 garages)")
        agreement = (
            await registry.SetAgreement(
                ppb.SetAgreementRequest(name=f"partners/{OPERATOR}/agreements/occupancy", agreement=TERMS),
                metadata=as_caller(tokens["operator"]),
            )
        ).agreement
        say(f"[operator] set {agreement.name} revision {agreement.revision}: {agreement.change_note}")
        get = pb.GetOccupancyRequest(facility=f"facilities/{GARAGE}")
        engineer = as_caller(tokens["engineer"], TRAFFIC_MANAGEMENT)
        for _ in range(100):  # the agreement reaches the parking service through the PARTNERS stream
            if (await garages.GetOccupancy(get, metadata=engineer)).occupancy.sharing.revision:
                break
            await asyncio.sleep(0.05)
        async with httpx.AsyncClient(base_url=gateway) as http:
            feed = (await http.get(f"/feeds/spdp/dynamic/{GARAGE}")).json()["parkingFacilityDynamicInformation"]
        status = feed["facilityActualStatus"]
        say(
            f"[public feed] SPDP {GARAGE}, as it was five minutes ago: {status['statusDescription']!r}, "
            f"vacantSpaces {status.get('vacantSpaces', 'absent')}"
        )
        raw = (await garages.GetOccupancy(get, metadata=as_caller(tokens["optimizer"], TRAFFIC_MANAGEMENT))).occupancy
        say(f"[optimizer] {GARAGE}: {_shown(raw)}")
        rounded = (await garages.GetOccupancy(get, metadata=engineer)).occupancy
        say(f"[engineer] {GARAGE}: {_shown(rounded)}")
        try:
            await garages.GetOccupancy(get, metadata=as_caller(tokens["police"], TRAFFIC_MANAGEMENT))
            police = "read it (unexpected)"
        except grpc.aio.AioRpcError as err:
            police = f"{err.code().name}: {err.details()}"
        say(f"[police] {GARAGE}: {police}")
        for _ in range(100):  # the audit arrives through the PARTNER_ACCESS stream
            records = (
                await registry.ListAccessRecords(
                    ppb.ListAccessRecordsRequest(parent=f"partners/{OPERATOR}"), metadata=as_caller(tokens["operator"])
                )
            ).records
            if {"optimizer", "police", "public"} <= {r.role for r in records}:
                break
            await asyncio.sleep(0.05)
        for record in reversed(records):
            outcome = ppb.AccessOutcome.Name(record.outcome).removeprefix("ACCESS_OUTCOME_").lower()
            say(
                f"[operator's audit] {record.caller} ({record.role}) {record.service}.{record.method} "
                f"for {record.purpose or 'no purpose'}: {outcome}" + (f" ({record.reason})" if record.reason else "")
            )
        return raw.sharing.outcome == ppb.ACCESS_OUTCOME_FULL and "vacantSpaces" not in status
