"""The gRPC servicer of almere.partners.v1.PartnerService: proto <-> domain, status codes, roles."""

from __future__ import annotations

import asyncio
from typing import Any

from almere.partners.v1 import partners_pb2 as pb
from almere.partners.v1 import partners_pb2_grpc
from grpc import aio
from sqlalchemy import Engine

from services.common import paging
from services.common.access import allow
from services.common.agreements import Governance
from services.common.auth import current_identity
from services.common.clock import utcnow
from services.common.db import GroupCommitter
from services.common.errors import InvalidArgument, NotFound, ServiceError
from services.common.names import id_from_name, validate_id
from services.partners import logic, usecases

Context = aio.ServicerContext[Any, Any]
PARTNER_OUTPUT_ONLY = ("name", "state", "state_reason", "create_time", "update_time")
AGREEMENT_OUTPUT_ONLY = ("name", "dataset", "revision", "updater", "update_time")


def _agreement_name(name: str) -> tuple[str, int]:
    """`partners/{partner}/agreements/{dataset}` -> (partner id, dataset)."""
    parent, sep, slug = name.partition("/agreements/")
    if not sep:
        raise InvalidArgument(f"name {name!r} must look like partners/{{partner}}/agreements/{{dataset}}")
    return id_from_name(parent, "partners"), logic.dataset_of(slug)


def _cleared(message: Any, fields: tuple[str, ...]) -> Any:
    out = type(message)()
    out.CopyFrom(message)
    for name in fields:
        out.ClearField(name)
    return out


class PartnerApi(partners_pb2_grpc.PartnerServiceServicer):
    def __init__(self, engine: Engine, *, committer: GroupCommitter, governance: Governance) -> None:
        self._engine = engine
        self._committer = committer
        self._governance = governance

    @allow(logic.MANAGERS)
    async def CreatePartner(self, request: pb.CreatePartnerRequest, context: Context) -> pb.CreatePartnerResponse:
        partner_id = validate_id(request.partner_id, "partner_id")
        partner = _cleared(request.partner, PARTNER_OUTPUT_ONLY)
        logic.validate_partner(partner)
        item = usecases.CreatePartner(
            identity=current_identity.get(), partner_id=partner_id, partner=partner, now=utcnow()
        )
        return pb.CreatePartnerResponse(partner=await self._committer.submit(usecases.create_partners, item))

    @allow(logic.READERS, notes=logic.SELF_NOTES)
    async def GetPartner(self, request: pb.GetPartnerRequest, context: Context) -> pb.GetPartnerResponse:
        partner_id = id_from_name(request.name, "partners")
        logic.check_reader(current_identity.get(), partner_id)
        return pb.GetPartnerResponse(partner=await asyncio.to_thread(usecases.get_partner, self._engine, partner_id))

    @allow(logic.READERS, notes=logic.SELF_NOTES)
    async def ListPartners(self, request: pb.ListPartnersRequest, context: Context) -> pb.ListPartnersResponse:
        identity = current_identity.get()
        size = paging.page_size(request.page_size)
        only = identity.subject if identity.role in logic.SELF_ROLES else None
        query = paging.fingerprint(("partners", only))
        after = paging.decode(request.page_token, query)
        found = await asyncio.to_thread(usecases.list_partners, self._engine, size=size, after=after, only=only)
        page = found[:size]
        token = paging.encode(page[-1].name.removeprefix("partners/"), query) if len(found) > size else ""
        return pb.ListPartnersResponse(partners=page, next_page_token=token)

    @allow(logic.CITY_AND_ITSELF, notes=logic.SELF_NOTES)
    async def UpdatePartner(self, request: pb.UpdatePartnerRequest, context: Context) -> pb.UpdatePartnerResponse:
        partner_id = id_from_name(request.partner.name, "partners", "partner.name")
        paths = tuple(dict.fromkeys(request.update_mask.paths))
        if not paths:
            raise InvalidArgument(f"update_mask is required: {', '.join(logic.UPDATABLE)}")
        if stray := [p for p in paths if p not in logic.UPDATABLE]:
            raise InvalidArgument(
                f"update_mask: {', '.join(stray)} cannot be changed; only {', '.join(logic.UPDATABLE)}"
            )
        identity = current_identity.get()
        logic.check_city_only(identity, paths)
        item = usecases.UpdatePartner(
            identity=identity, partner_id=partner_id, patch=request.partner, paths=paths, now=utcnow()
        )
        return pb.UpdatePartnerResponse(partner=await self._committer.submit(usecases.update_partners, item))

    @allow(logic.MANAGERS)
    async def SuspendPartner(self, request: pb.SuspendPartnerRequest, context: Context) -> pb.SuspendPartnerResponse:
        if not request.reason.strip():
            raise InvalidArgument("reason is required: the partner sees it")
        partner = await self._change_state(request.name, pb.Partner.STATE_SUSPENDED, request.reason)
        return pb.SuspendPartnerResponse(partner=partner)

    @allow(logic.MANAGERS)
    async def ActivatePartner(self, request: pb.ActivatePartnerRequest, context: Context) -> pb.ActivatePartnerResponse:
        partner = await self._change_state(request.name, pb.Partner.STATE_ACTIVE, request.reason)
        return pb.ActivatePartnerResponse(partner=partner)

    async def _change_state(self, name: str, state: int, reason: str) -> pb.Partner:
        if len(reason) > 500:
            raise InvalidArgument("reason: at most 500 characters")
        item = usecases.ChangeState(
            identity=current_identity.get(),
            partner_id=id_from_name(name, "partners"),
            state=state,
            reason=reason.strip(),
            now=utcnow(),
        )
        partner: pb.Partner = await self._committer.submit(usecases.change_states, item)
        return partner

    @allow(logic.CITY_AND_ITSELF, notes=logic.SELF_NOTES)
    async def SetAgreement(self, request: pb.SetAgreementRequest, context: Context) -> pb.SetAgreementResponse:
        identity = current_identity.get()
        partner_id, dataset = _agreement_name(request.name)
        now = utcnow()
        agreement = _cleared(request.agreement, AGREEMENT_OUTPUT_ONLY)
        try:  # another's attempt, or terms that contradict themselves: in the partner's audit
            logic.check_keeper(identity, partner_id)
            if not request.HasField("agreement"):
                raise InvalidArgument("agreement is required")
            logic.validate_agreement(agreement, dataset=dataset, now=now)
        except ServiceError as refused:
            self._governance.refused_write(
                partner_id, dataset=dataset, method="SetAgreement", reason=refused.message, now=now
            )
            raise
        item = usecases.SetAgreement(
            identity=identity, partner_id=partner_id, dataset=dataset, agreement=agreement, now=now
        )
        return pb.SetAgreementResponse(agreement=await self._committer.submit(usecases.set_agreements, item))

    @allow(logic.CITY_AND_ITSELF, notes=logic.SELF_NOTES)
    async def GetAgreement(self, request: pb.GetAgreementRequest, context: Context) -> pb.GetAgreementResponse:
        partner_id, dataset = _agreement_name(request.name)
        logic.check_keeper(current_identity.get(), partner_id)
        found = await asyncio.to_thread(usecases.agreements, self._engine, partner_id, dataset=dataset)
        if not found:
            raise NotFound(f"partner {partner_id!r} has no agreement for {logic.SLUGS[dataset]}")
        return pb.GetAgreementResponse(agreement=found[0])

    @allow(logic.CITY_AND_ITSELF, notes=logic.SELF_NOTES)
    async def ListAgreements(self, request: pb.ListAgreementsRequest, context: Context) -> pb.ListAgreementsResponse:
        partner_id = id_from_name(request.parent, "partners", "parent")
        logic.check_keeper(current_identity.get(), partner_id)
        found = await asyncio.to_thread(usecases.agreements, self._engine, partner_id)
        return pb.ListAgreementsResponse(agreements=found)

    @allow(logic.CITY_AND_ITSELF, notes=logic.SELF_NOTES)
    async def ListAgreementRevisions(
        self, request: pb.ListAgreementRevisionsRequest, context: Context
    ) -> pb.ListAgreementRevisionsResponse:
        partner_id, dataset = _agreement_name(request.name)
        logic.check_keeper(current_identity.get(), partner_id)
        size = paging.page_size(request.page_size)
        query = paging.fingerprint(("revisions", request.name))
        before = paging.decode_int(request.page_token, query)
        found = await asyncio.to_thread(usecases.revisions, self._engine, partner_id, dataset, size=size, before=before)
        if not found and before is None:
            raise NotFound(f"partner {partner_id!r} has no agreement for {logic.SLUGS[dataset]}")
        page = found[:size]
        token = paging.encode(str(page[-1].revision), query) if len(found) > size else ""
        return pb.ListAgreementRevisionsResponse(agreements=page, next_page_token=token)

    @allow(logic.CITY_AND_ITSELF, notes=logic.SELF_NOTES)
    async def ListAccessRecords(
        self, request: pb.ListAccessRecordsRequest, context: Context
    ) -> pb.ListAccessRecordsResponse:
        partner_id = id_from_name(request.parent, "partners", "parent")
        logic.check_keeper(current_identity.get(), partner_id)
        size = paging.page_size(request.page_size)
        query = paging.fingerprint(("access", partner_id))
        before = paging.decode_int(request.page_token, query)
        found = await asyncio.to_thread(usecases.access_records, self._engine, partner_id, size=size, before=before)
        page = found[:size]
        token = paging.encode(str(page[-1][0]), query) if len(found) > size else ""
        return pb.ListAccessRecordsResponse(records=[record for _, record in page], next_page_token=token)
