"""Deletes the history partners' agreements do not let the city keep (`retention_days`), on a schedule,
and puts each deletion in the partner's audit. Each service holding a partner dataset runs one, with
the batch handler that deletes its own rows; with several replicas only the one leading the
schedulers (`leads`) deletes, so each deletion is audited once."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.common.agreements import AccessAudit, AgreementBook, Read
from services.common.auth import Identity, Role
from services.common.clock import utcnow
from services.common.db import BatchHandler, GroupCommitter
from services.common.worker import Worker

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Expire:
    """Delete `partner_id`'s history measured before `before`; the handler answers how many rows."""

    partner_id: str
    before: datetime


class Retention:
    def __init__(
        self,
        *,
        service: str,
        dataset: int,
        expire: BatchHandler,
        book: AgreementBook,
        audit: AccessAudit,
        committer: GroupCommitter,
        every_s: float,
        leads: Callable[[], bool],
    ) -> None:
        self._dataset = dataset
        self._expire = expire
        self._book = book
        self._audit = audit
        self._committer = committer
        self._leads = leads
        self._actor = Identity(f"{service}-retention", Role.SERVICE, service)
        self._worker = Worker(f"{service}-retention", self.run, every_s)

    def start(self) -> None:
        self._worker.start()

    async def stop(self) -> None:
        await self._worker.stop()

    async def run(self) -> None:
        """One round: every partner's expired history deleted, each deletion audited."""
        if not self._leads():
            return
        now = utcnow()
        for partner_id, (days, access) in self._book.retention(self._dataset).items():
            item = Expire(partner_id=partner_id, before=now - timedelta(days=days))
            try:
                deleted: int = await self._committer.submit(self._expire, item)
            except Exception:
                log.exception("deleting %s's expired history failed; will retry", partner_id)
                continue
            if deleted:
                read = Read(
                    access=access, identity=self._actor, purpose="retention", method="Retention", items=deleted, now=now
                )
                self._audit.record(read)
                log.info("deleted %d history rows of %s older than %d days", deleted, partner_id, days)
