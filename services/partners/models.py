"""The partner service's tables. Only this service imports them.

A partner and each agreement revision are stored as their protobuf documents beside the columns
queries use. Agreement revisions are never changed: the one in force is the highest of its dataset.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from services.common.clock import UtcDateTime
from services.common.outbox import OutboxBase


class PartnerRow(SQLModel, table=True):
    __tablename__ = "partners_partner"

    id: str = Field(primary_key=True, max_length=63)
    kind: int
    state: int = Field(index=True)
    # Bumped by every change of the partner or of one of its agreements (its events' version).
    version: int
    create_time: datetime = Field(sa_type=UtcDateTime)
    update_time: datetime = Field(sa_type=UtcDateTime)
    # The Partner document (display name, contacts, state and its reason).
    document: bytes = Field(sa_type=LargeBinary)


class AgreementRow(SQLModel, table=True):
    """One revision of one dataset's agreement."""

    __tablename__ = "partners_agreement"
    __table_args__ = (UniqueConstraint("partner_id", "dataset", "revision", name="uq_partners_agreement_revision"),)

    id: int | None = Field(default=None, primary_key=True)
    partner_id: str = Field(max_length=63, index=True)
    dataset: int
    revision: int
    updater: str = Field(max_length=128)
    update_time: datetime = Field(sa_type=UtcDateTime)
    document: bytes = Field(sa_type=LargeBinary)


class PartnerHistory(SQLModel, table=True):
    """Who changed a partner (created, updated, suspended, activated, agreement set), when and why."""

    __tablename__ = "partners_history"

    id: int | None = Field(default=None, primary_key=True)
    partner_id: str = Field(max_length=63, index=True)
    version: int
    change: str = Field(max_length=64)
    actor: str = Field(max_length=128)
    actor_role: str = Field(max_length=64)
    reason: str = Field(default="", max_length=500)
    time: datetime = Field(sa_type=UtcDateTime)


class AccessRecordRow(SQLModel, table=True):
    """One read of a partner's data (an AccessRecord from PARTNER_ACCESS), once per stream sequence."""

    __tablename__ = "partners_access_record"

    id: int | None = Field(default=None, primary_key=True)
    sequence: int = Field(unique=True)  # the PARTNER_ACCESS message's: a redelivery is dropped
    partner_id: str = Field(max_length=63, index=True)
    read_time: datetime = Field(sa_type=UtcDateTime)
    document: bytes = Field(sa_type=LargeBinary)


class PartnersOutbox(OutboxBase, table=True):
    __tablename__ = "partners_outbox"


TABLES: list[type[SQLModel]] = [PartnerRow, AgreementRow, PartnerHistory, AccessRecordRow, PartnersOutbox]
