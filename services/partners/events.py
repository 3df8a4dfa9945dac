"""The partner service's events (stream PARTNERS, see contract.bus), built as outbox rows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from almere.partners.v1 import events_pb2
from almere.partners.v1 import partners_pb2 as pb

from contract.bus import AGREEMENT_SET, PARTNERS
from services.common.clock import to_timestamp
from services.common.outbox import outbox_row
from services.partners.logic import SLUGS


def partner_changed(*, event: str, partner_id: str, version: int, partner: pb.Partner, now: datetime) -> dict[str, Any]:
    """The partner without its contacts: people's names and numbers stay in the registry."""
    message = events_pb2.PartnerChangedEvent(
        partner_id=partner_id, version=version, occur_time=to_timestamp(now), partner=partner
    )
    message.partner.ClearField("contacts")
    return outbox_row(subject=PARTNERS.subject(event, partner_id), event_type=event, message=message, now=now)


def agreement_set(*, partner_id: str, version: int, agreement: pb.Agreement, now: datetime) -> dict[str, Any]:
    message = events_pb2.AgreementChangedEvent(
        partner_id=partner_id, version=version, occur_time=to_timestamp(now), agreement=agreement
    )
    subject = PARTNERS.subject(AGREEMENT_SET, f"{partner_id}.{SLUGS[agreement.dataset]}")
    return outbox_row(subject=subject, event_type=AGREEMENT_SET, message=message, now=now)
