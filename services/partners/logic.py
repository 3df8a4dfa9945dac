"""The partner registry's rules: who manages whom, what a partner and an agreement must hold, and when
an agreement contradicts itself. No gRPC, no database."""

from __future__ import annotations

import re
from datetime import datetime

from almere.partners.v1 import partners_pb2 as pb

from services.common.auth import PUBLIC_SAFETY, Identity, Role
from services.common.clock import from_timestamp
from services.common.errors import InvalidArgument, PermissionDenied

# A partner's own callers: `partner:<id>`, or `operator:<id>` for a garage operator.
SELF_ROLES = frozenset({Role.PARTNER, Role.OPERATOR})
MANAGERS = frozenset({Role.ENGINEER})
# Who may read partners: the city, public safety (who the security firms are) and a partner itself.
READERS = frozenset({Role.ENGINEER, *PUBLIC_SAFETY, *SELF_ROLES})
# Who changes a partner's details and sets and reads its agreements: the city and the partner itself.
CITY_AND_ITSELF = frozenset({Role.ENGINEER, *SELF_ROLES})
ITSELF = "itself only"
SELF_NOTES = dict.fromkeys(SELF_ROLES, ITSELF)

DATASETS: dict[str, int] = {
    "occupancy": pb.DATASET_OCCUPANCY,
    "incident-reports": pb.DATASET_INCIDENT_REPORTS,
    "sensor-counts": pb.DATASET_SENSOR_COUNTS,
}
SLUGS: dict[int, str] = {number: slug for slug, number in DATASETS.items()}
# What detail makes sense for each dataset: counts can be rounded, an occupancy told as a status.
DETAILS: dict[int, set[pb.Detail.ValueType]] = {
    pb.DATASET_OCCUPANCY: {pb.DETAIL_RAW, pb.DETAIL_ROUNDED, pb.DETAIL_STATUS_ONLY},
    pb.DATASET_SENSOR_COUNTS: {pb.DETAIL_RAW, pb.DETAIL_ROUNDED},
    pb.DATASET_INCIDENT_REPORTS: {pb.DETAIL_RAW},
}
PURPOSE = re.compile(r"^[a-z]+(-[a-z]+)*$")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MAX_CONTACTS = 20
MAX_PURPOSES = 10
ROUND_TO = (2, 1000)
DELAY_MINUTES = (0, 1440)
RETENTION_DAYS = (1, 3650)
UPDATABLE = ("display_name", "contacts", "trust_level")
# What only the city changes: a partner does not vouch for itself.
CITY_ONLY = frozenset({"trust_level"})
TRUST_LEVELS = frozenset(pb.TrustLevel.values()) - {pb.TRUST_LEVEL_UNSPECIFIED}


def is_itself(identity: Identity, partner_id: str) -> bool:
    return identity.role in SELF_ROLES and identity.subject == partner_id


def check_reader(identity: Identity, partner_id: str) -> None:
    """A partner reads only itself (engineers and public safety read every partner)."""
    if identity.role in SELF_ROLES and not is_itself(identity, partner_id):
        raise PermissionDenied(f"{identity.role_name} may read only partner {identity.subject!r}, not {partner_id!r}")


def check_keeper(identity: Identity, partner_id: str) -> None:
    """A partner's details and agreements are the city's and the partner's own business."""
    if identity.role is not Role.ENGINEER and not is_itself(identity, partner_id):
        raise PermissionDenied(
            f"{identity.role_name} may not manage partner {partner_id!r}: only the city and the partner itself"
        )


def dataset_of(slug: str) -> int:
    dataset = DATASETS.get(slug)
    if dataset is None:
        raise InvalidArgument(f"unknown dataset {slug!r}; expected one of {', '.join(DATASETS)}")
    return dataset


def agreement_name(partner_id: str, dataset: int) -> str:
    return f"partners/{partner_id}/agreements/{SLUGS[dataset]}"


def check_city_only(identity: Identity, paths: tuple[str, ...]) -> None:
    if identity.role is not Role.ENGINEER and (city := sorted(CITY_ONLY.intersection(paths))):
        raise PermissionDenied(f"{', '.join(city)} is the city's to set (role engineer), not the partner's")


def validate_partner(partner: pb.Partner) -> None:
    """Checks a complete partner; an unset trust level becomes BASIC."""
    if partner.trust_level == pb.TRUST_LEVEL_UNSPECIFIED:
        partner.trust_level = pb.TRUST_LEVEL_BASIC
    if partner.trust_level not in TRUST_LEVELS:
        raise InvalidArgument("partner.trust_level must be BASIC or TRUSTED")
    if not 1 <= len(partner.display_name.strip()) <= 200:
        raise InvalidArgument("partner.display_name is required (at most 200 characters)")
    if partner.kind not in pb.PartnerKind.values() or partner.kind == pb.PARTNER_KIND_UNSPECIFIED:
        raise InvalidArgument("partner.kind is required: garage operator, security firm, business, ...")
    if len(partner.contacts) > MAX_CONTACTS:
        raise InvalidArgument(f"partner.contacts: at most {MAX_CONTACTS}")
    for i, contact in enumerate(partner.contacts):
        where = f"partner.contacts[{i}]"
        if not contact.display_name.strip():
            raise InvalidArgument(f"{where}.display_name is required")
        if not contact.email and not contact.phone:
            raise InvalidArgument(f"{where}: an email address or a phone number is required")
        if contact.email and not EMAIL.match(contact.email):
            raise InvalidArgument(f"{where}.email {contact.email!r} is not an email address")
        if any(len(v) > 200 for v in (contact.display_name, contact.email, contact.phone, contact.responsibility)):
            raise InvalidArgument(f"{where}: at most 200 characters a field")


def validate_agreement(agreement: pb.Agreement, *, dataset: int, now: datetime) -> None:
    """Refuses terms that contradict themselves or the dataset, naming the field at fault."""
    seen: set[int] = set()
    for i, terms in enumerate(agreement.audiences):
        where = f"agreement.audiences[{i}]"
        if terms.audience not in pb.Audience.values() or terms.audience == pb.AUDIENCE_UNSPECIFIED:
            raise InvalidArgument(f"{where}.audience is required")
        if terms.audience in seen:
            raise InvalidArgument(f"{where}: audience {pb.Audience.Name(terms.audience)} has terms twice")
        seen.add(terms.audience)
        if terms.detail not in DETAILS[dataset]:
            allowed = ", ".join(pb.Detail.Name(d) for d in sorted(DETAILS[dataset]))
            raise InvalidArgument(f"{where}.detail: {SLUGS[dataset]} can be shared as {allowed}")
        if terms.detail == pb.DETAIL_ROUNDED and not ROUND_TO[0] <= terms.round_to <= ROUND_TO[1]:
            raise InvalidArgument(f"{where}.round_to must be {ROUND_TO[0]}-{ROUND_TO[1]} with DETAIL_ROUNDED")
        if terms.detail != pb.DETAIL_ROUNDED and terms.round_to:
            raise InvalidArgument(f"{where}.round_to applies only to DETAIL_ROUNDED")
        if not DELAY_MINUTES[0] <= terms.delay_minutes <= DELAY_MINUTES[1]:
            raise InvalidArgument(f"{where}.delay_minutes must be {DELAY_MINUTES[0]}-{DELAY_MINUTES[1]}")
    if dataset == pb.DATASET_INCIDENT_REPORTS:
        _check_reports(agreement)
    if not RETENTION_DAYS[0] <= agreement.retention_days <= RETENTION_DAYS[1]:
        raise InvalidArgument(f"agreement.retention_days must be {RETENTION_DAYS[0]}-{RETENTION_DAYS[1]}")
    if not 1 <= len(agreement.purposes) <= MAX_PURPOSES:
        raise InvalidArgument(f"agreement.purposes: name 1-{MAX_PURPOSES} purposes a reader must declare")
    for purpose in agreement.purposes:
        if len(purpose) > 40 or not PURPOSE.match(purpose):
            raise InvalidArgument(f"agreement.purposes: {purpose!r} is not lower-case words joined by hyphens")
    if len(set(agreement.purposes)) != len(agreement.purposes):
        raise InvalidArgument("agreement.purposes: a purpose is named twice")
    if agreement.HasField("valid_until"):
        until = from_timestamp(agreement.valid_until)
        if until <= now:
            raise InvalidArgument("agreement.valid_until is in the past: such terms would never apply")
        if agreement.HasField("valid_from") and from_timestamp(agreement.valid_from) >= until:
            raise InvalidArgument("agreement.valid_from must be before valid_until")
    if len(agreement.change_note) > 500:
        raise InvalidArgument("agreement.change_note: at most 500 characters")


def _check_reports(agreement: pb.Agreement) -> None:
    """Reports are made to the police, to act on now: public safety must be an audience, and no
    audience gets them late."""
    if not any(t.audience == pb.AUDIENCE_PUBLIC_SAFETY for t in agreement.audiences):
        raise InvalidArgument(
            "agreement.audiences: incident reports go to the police; AUDIENCE_PUBLIC_SAFETY must be listed"
        )
    for i, terms in enumerate(agreement.audiences):
        if terms.delay_minutes:
            raise InvalidArgument(f"agreement.audiences[{i}].delay_minutes: incident reports are shared live (0)")
