"""The partner registry on a real database and nats-server: partners registered by the city, their
agreements set by themselves or the city in revisions with who and when, contradictions refused with
nothing written, suspension the city's alone, and every change on the PARTNERS stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import nats
import pytest
from almere.partners.v1 import events_pb2
from almere.partners.v1 import partners_pb2 as pb
from google.protobuf.field_mask_pb2 import FieldMask

from apps.natsd import NatsServer
from services.partners.service import SPEC
from tests.integration.helpers import Partners, read_stream, ts, wait_for_last_message

OCCUPANCY = "partners/op-a/agreements/occupancy"
REPORTS = "partners/firm-a/agreements/incident-reports"


@pytest.fixture
async def partners(start_service: Callable[..., Awaitable[str]], tokens: dict[str, str]) -> AsyncIterator[Partners]:
    async with grpc.aio.insecure_channel(await start_service(SPEC)) as channel:
        client = Partners(channel, tokens)
        for partner_id, kind in (("firm-a", pb.PARTNER_KIND_SECURITY_FIRM), ("op-a", pb.PARTNER_KIND_GARAGE_OPERATOR)):
            await client.as_("engineer").CreatePartner(
                pb.CreatePartnerRequest(
                    partner_id=partner_id,
                    partner=pb.Partner(
                        display_name=partner_id.upper(),
                        kind=kind,
                        contacts=[pb.Contact(display_name="Desk", email=f"desk@{partner_id}.example")],
                    ),
                )
            )
        yield client


def _terms(**overrides: Any) -> pb.Agreement:
    fields: dict[str, Any] = {
        "audiences": [
            pb.AudienceTerms(audience=pb.AUDIENCE_OPTIMIZER, detail=pb.DETAIL_RAW),
            pb.AudienceTerms(audience=pb.AUDIENCE_PUBLIC, detail=pb.DETAIL_STATUS_ONLY, delay_minutes=5),
        ],
        "retention_days": 30,
        "purposes": ["traffic-management"],
        **overrides,
    }
    return pb.Agreement(**fields)


async def _code(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str]:
    try:
        await call
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


async def _published(nats_server: NatsServer, subject: str, *, version: int) -> None:
    """Wait until the relay has published `subject`'s event of `version`."""
    nc = await nats.connect(nats_server.url, **nats_server.client_options("observer"))
    try:
        await asyncio.wait_for(
            wait_for_last_message(
                nc.jetstream(),
                "PARTNERS",
                subject,
                lambda msg: events_pb2.AgreementChangedEvent.FromString(msg.data).version == version,
            ),
            10,
        )
    finally:
        await nc.close()


async def _events(nats_server: NatsServer, count: int) -> list[tuple[str, Any]]:
    """The first `count` PARTNERS events (the relay publishes shortly after each commit)."""
    seen: list[tuple[str, Any]] = []
    deadline = time.monotonic() + 10
    while len(seen) < count and time.monotonic() < deadline:
        seen += await read_stream(nats_server, "almere.partners.v1.>", durable="partners-test", stream="PARTNERS")
    return seen


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
async def test_partners_set_their_agreements_in_revisions_the_city_can_read(
    partners: Partners, nats_server: NatsServer
) -> None:
    first = await partners.as_("operator").SetAgreement(pb.SetAgreementRequest(name=OCCUPANCY, agreement=_terms()))
    second = await partners.as_("engineer").SetAgreement(
        pb.SetAgreementRequest(name=OCCUPANCY, agreement=_terms(retention_days=7, change_note="a week is enough"))
    )
    assert (first.agreement.revision, first.agreement.updater) == (1, "operator")
    assert (second.agreement.revision, second.agreement.updater) == (2, "engineer")
    assert second.agreement.name == OCCUPANCY and second.agreement.dataset == pb.DATASET_OCCUPANCY

    in_force = await partners.as_("operator").GetAgreement(pb.GetAgreementRequest(name=OCCUPANCY))
    assert in_force.agreement == second.agreement
    listed = await partners.as_("engineer").ListAgreements(pb.ListAgreementsRequest(parent="partners/op-a"))
    assert list(listed.agreements) == [second.agreement]
    page = await partners.as_("operator").ListAgreementRevisions(
        pb.ListAgreementRevisionsRequest(name=OCCUPANCY, page_size=1)
    )
    rest = await partners.as_("operator").ListAgreementRevisions(
        pb.ListAgreementRevisionsRequest(name=OCCUPANCY, page_size=1, page_token=page.next_page_token)
    )
    assert [a.revision for a in (*page.agreements, *rest.agreements)] == [2, 1] and not rest.next_page_token
    assert rest.agreements[0].retention_days == 30

    await _published(nats_server, "almere.partners.v1.agreement_set.op-a.occupancy", version=3)
    # A state stream: the last message of each subject stays, however old, for every replay.
    events = await _events(nats_server, 3)
    assert [subject for subject, _ in events] == [
        "almere.partners.v1.partner_created.firm-a",
        "almere.partners.v1.partner_created.op-a",
        "almere.partners.v1.agreement_set.op-a.occupancy",
    ]
    assert not events[0][1].partner.contacts, "people's names and numbers stay in the registry"
    assert (events[2][1].version, events[2][1].agreement) == (3, second.agreement)


async def test_only_the_city_and_the_partner_itself_see_and_set_its_agreements(partners: Partners) -> None:
    await partners.as_("partner").SetAgreement(
        pb.SetAgreementRequest(
            name=REPORTS,
            agreement=_terms(
                audiences=[pb.AudienceTerms(audience=pb.AUDIENCE_PUBLIC_SAFETY, detail=pb.DETAIL_RAW)],
                purposes=["public-safety"],
            ),
        )
    )
    for caller in ("other_partner", "other_operator"):
        code, message = await _code(partners.as_(caller).GetAgreement(pb.GetAgreementRequest(name=REPORTS)))
        assert code == grpc.StatusCode.PERMISSION_DENIED and "may not manage partner 'firm-a'" in message
        code, _ = await _code(
            partners.as_(caller).SetAgreement(pb.SetAgreementRequest(name=REPORTS, agreement=_terms()))
        )
        assert code == grpc.StatusCode.PERMISSION_DENIED
        code, _ = await _code(partners.as_(caller).GetPartner(pb.GetPartnerRequest(name="partners/firm-a")))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    for caller in ("police", "optimizer", "public", "sim"):
        code, _ = await _code(partners.as_(caller).GetAgreement(pb.GetAgreementRequest(name=REPORTS)))
        assert code == grpc.StatusCode.PERMISSION_DENIED, caller
    seen = await partners.as_("police").GetPartner(pb.GetPartnerRequest(name="partners/firm-a"))
    assert seen.partner.kind == pb.PARTNER_KIND_SECURITY_FIRM
    own = await partners.as_("partner").ListPartners(pb.ListPartnersRequest())
    assert [p.name for p in own.partners] == ["partners/firm-a"]
    every = await partners.as_("engineer").ListPartners(pb.ListPartnersRequest())
    assert [p.name for p in every.partners] == ["partners/firm-a", "partners/op-a"]


@pytest.mark.parametrize(
    ("name", "agreement", "message"),
    [
        ("partners/op-a/agreements/occupancy", _terms(retention_days=0), "retention_days must be 1-3650"),
        ("partners/op-a/agreements/occupancy", _terms(purposes=[]), "name 1-10 purposes"),
        ("partners/op-a/agreements/occupancy", _terms(purposes=["Traffic Management"]), "lower-case words"),
        ("partners/op-a/agreements/occupancy", _terms(purposes=["a", "a"]), "named twice"),
        (
            "partners/op-a/agreements/occupancy",
            _terms(
                audiences=[
                    pb.AudienceTerms(audience=pb.AUDIENCE_PUBLIC, detail=pb.DETAIL_RAW),
                    pb.AudienceTerms(audience=pb.AUDIENCE_PUBLIC, detail=pb.DETAIL_STATUS_ONLY),
                ]
            ),
            "audience AUDIENCE_PUBLIC has terms twice",
        ),
        (
            "partners/op-a/agreements/occupancy",
            _terms(audiences=[pb.AudienceTerms(audience=pb.AUDIENCE_ENGINEER, detail=pb.DETAIL_ROUNDED)]),
            "round_to must be 2-1000 with DETAIL_ROUNDED",
        ),
        (
            "partners/op-a/agreements/occupancy",
            _terms(audiences=[pb.AudienceTerms(audience=pb.AUDIENCE_ENGINEER, detail=pb.DETAIL_RAW, round_to=10)]),
            "round_to applies only to DETAIL_ROUNDED",
        ),
        (
            "partners/op-a/agreements/occupancy",
            _terms(audiences=[pb.AudienceTerms(audience=pb.AUDIENCE_ENGINEER, detail=pb.DETAIL_RAW, delay_minutes=-1)]),
            "delay_minutes must be 0-1440",
        ),
        (
            "partners/firm-a/agreements/incident-reports",
            _terms(audiences=[pb.AudienceTerms(audience=pb.AUDIENCE_PUBLIC, detail=pb.DETAIL_STATUS_ONLY)]),
            "incident-reports can be shared as DETAIL_RAW",
        ),
        (
            "partners/firm-a/agreements/incident-reports",
            _terms(audiences=[pb.AudienceTerms(audience=pb.AUDIENCE_ENGINEER, detail=pb.DETAIL_RAW)]),
            "incident reports go to the police; AUDIENCE_PUBLIC_SAFETY must be listed",
        ),
        (
            "partners/firm-a/agreements/incident-reports",
            _terms(
                audiences=[
                    pb.AudienceTerms(audience=pb.AUDIENCE_PUBLIC_SAFETY, detail=pb.DETAIL_RAW),
                    pb.AudienceTerms(audience=pb.AUDIENCE_ENGINEER, detail=pb.DETAIL_RAW, delay_minutes=10),
                ]
            ),
            "audiences[1].delay_minutes: incident reports are shared live (0)",
        ),
        (
            "partners/op-a/agreements/occupancy",
            _terms(audiences=[pb.AudienceTerms(audience=pb.AUDIENCE_ENGINEER)]),
            "detail: occupancy can be shared as",
        ),
        (
            "partners/op-a/agreements/occupancy",
            _terms(valid_until=ts(datetime.now(UTC) - timedelta(days=1))),
            "valid_until is in the past",
        ),
        (
            "partners/op-a/agreements/occupancy",
            _terms(
                valid_from=ts(datetime.now(UTC) + timedelta(days=9)),
                valid_until=ts(datetime.now(UTC) + timedelta(days=2)),
            ),
            "valid_from must be before valid_until",
        ),
        ("partners/op-a/agreements/photos", _terms(), "unknown dataset 'photos'"),
        ("partners/op-a/occupancy", _terms(), "must look like partners/{partner}/agreements/{dataset}"),
        ("partners/nobody/agreements/occupancy", _terms(), "partner 'nobody' not found"),
    ],
)
async def test_an_agreement_that_contradicts_itself_is_refused_and_nothing_written(
    partners: Partners, nats_server: NatsServer, name: str, agreement: pb.Agreement, message: str
) -> None:
    code, details = await _code(
        partners.as_("engineer").SetAgreement(pb.SetAgreementRequest(name=name, agreement=agreement))
    )
    assert (code, message in details) == (
        grpc.StatusCode.NOT_FOUND if "not found" in message else grpc.StatusCode.INVALID_ARGUMENT,
        True,
    ), details
    listed = await partners.as_("engineer").ListAgreements(pb.ListAgreementsRequest(parent="partners/op-a"))
    assert not listed.agreements
    await asyncio.sleep(0.3)  # what the relay would have published by now
    assert [s for s, _ in await _events(nats_server, 2)] == [
        "almere.partners.v1.partner_created.firm-a",
        "almere.partners.v1.partner_created.op-a",
    ]


async def test_a_refused_agreement_is_in_the_partners_audit(partners: Partners) -> None:
    await asyncio.sleep(0.5)  # the registry audits attempts on partners it has seen on PARTNERS
    bad = _terms(retention_days=0)
    code, _ = await _code(partners.as_("operator").SetAgreement(pb.SetAgreementRequest(name=OCCUPANCY, agreement=bad)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = await _code(
        partners.as_("other_operator").SetAgreement(pb.SetAgreementRequest(name=OCCUPANCY, agreement=_terms()))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED

    async def refused() -> list[tuple[str, str, str]]:
        reply = await partners.as_("operator").ListAccessRecords(pb.ListAccessRecordsRequest(parent="partners/op-a"))
        return [(r.role, r.method, r.reason) for r in reply.records if r.outcome == pb.ACCESS_OUTCOME_REFUSED]

    for _ in range(100):
        if len(found := await refused()) == 2:
            break
        await asyncio.sleep(0.05)
    assert sorted(found) == [
        ("operator:op-a", "SetAgreement", "agreement.retention_days must be 1-3650"),
        (
            "operator:op-b",
            "SetAgreement",
            "operator:op-b may not manage partner 'op-a': only the city and the partner itself",
        ),
    ]


async def test_the_partner_keeps_its_contacts_current_and_nothing_else(partners: Partners) -> None:
    contacts = [pb.Contact(display_name="Night desk", phone="+31 36 000 0000", responsibility="24/7 control room")]
    updated = await partners.as_("partner").UpdatePartner(
        pb.UpdatePartnerRequest(
            partner=pb.Partner(name="partners/firm-a", contacts=contacts, display_name="ignored"),
            update_mask=FieldMask(paths=["contacts"]),
        )
    )
    assert list(updated.partner.contacts) == contacts and updated.partner.display_name == "FIRM-A"
    code, message = await _code(
        partners.as_("partner").UpdatePartner(
            pb.UpdatePartnerRequest(
                partner=pb.Partner(name="partners/firm-a", state=pb.Partner.STATE_ACTIVE),
                update_mask=FieldMask(paths=["state"]),
            )
        )
    )
    assert (code, message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "update_mask: state cannot be changed; only display_name, contacts, trust_level",
    )
    code, message = await _code(
        partners.as_("partner").UpdatePartner(
            pb.UpdatePartnerRequest(
                partner=pb.Partner(name="partners/firm-a", trust_level=pb.TRUST_LEVEL_TRUSTED),
                update_mask=FieldMask(paths=["trust_level"]),
            )
        )
    )
    assert (code, message) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "trust_level is the city's to set (role engineer), not the partner's",
    )
    code, message = await _code(
        partners.as_("partner").UpdatePartner(
            pb.UpdatePartnerRequest(
                partner=pb.Partner(name="partners/firm-a", contacts=[pb.Contact(display_name="Nobody")]),
                update_mask=FieldMask(paths=["contacts"]),
            )
        )
    )
    assert (code, message) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "partner.contacts[0]: an email address or a phone number is required",
    )
    code, _ = await _code(
        partners.as_("other_partner").UpdatePartner(
            pb.UpdatePartnerRequest(
                partner=pb.Partner(name="partners/firm-a"), update_mask=FieldMask(paths=["contacts"])
            )
        )
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED


async def test_suspension_is_the_citys_and_refuses_the_partner_until_it_ends(partners: Partners) -> None:
    code, _ = await _code(
        partners.as_("partner").SuspendPartner(pb.SuspendPartnerRequest(name="partners/firm-a", reason="x"))
    )
    assert code == grpc.StatusCode.PERMISSION_DENIED
    no_reason = pb.SuspendPartnerRequest(name="partners/firm-a")
    code, message = await _code(partners.as_("engineer").SuspendPartner(no_reason))
    assert (code, message) == (grpc.StatusCode.INVALID_ARGUMENT, "reason is required: the partner sees it")
    suspended = await partners.as_("engineer").SuspendPartner(
        pb.SuspendPartnerRequest(name="partners/firm-a", reason="contract under review")
    )
    assert (suspended.partner.state, suspended.partner.state_reason) == (
        pb.Partner.STATE_SUSPENDED,
        "contract under review",
    )
    code, message = await _code(
        partners.as_("engineer").SuspendPartner(pb.SuspendPartnerRequest(name="partners/firm-a", reason="again"))
    )
    assert (code, message) == (grpc.StatusCode.FAILED_PRECONDITION, "partner 'firm-a' is already suspended")

    read_itself = pb.GetPartnerRequest(name="partners/firm-a")
    refused_after = await _until(partners, "partner", read_itself, grpc.StatusCode.PERMISSION_DENIED)
    assert refused_after < 2.0, "the suspension reaches the service through the PARTNERS stream"
    assert await _code(partners.as_("partner").GetPartner(read_itself)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "partner 'firm-a' is suspended",
    )
    assert (await _code(partners.as_("other_partner").ListPartners(pb.ListPartnersRequest())))[0] == grpc.StatusCode.OK

    active = await partners.as_("engineer").ActivatePartner(
        pb.ActivatePartnerRequest(name="partners/firm-a", reason="renewed")
    )
    assert active.partner.state == pb.Partner.STATE_ACTIVE
    await _until(partners, "partner", read_itself, grpc.StatusCode.OK)


async def _until(partners: Partners, caller: str, request: pb.GetPartnerRequest, code: grpc.StatusCode) -> float:
    """Seconds until `caller`'s GetPartner ends with `code`."""
    started = time.monotonic()
    while (await _code(partners.as_(caller).GetPartner(request)))[0] != code:
        assert time.monotonic() - started < 5.0, f"no {code.name} within 5 s"
        await asyncio.sleep(0.01)
    return time.monotonic() - started
