"""Deletes the occupancy history a partner's agreement does not let the city keep (its
`retention_days`), on a schedule, and puts each deletion in the partner's audit."""

from __future__ import annotations

import logging
from datetime import timedelta

from services.common.agreements import AccessAudit, AgreementBook, Read
from services.common.auth import Identity, Role
from services.common.clock import utcnow
from services.common.db import GroupCommitter
from services.common.worker import Worker
from services.parking import usecases
from services.parking.sharing import DATASET

log = logging.getLogger(__name__)
ACTOR = Identity("parking-retention", Role.SERVICE, "parking")


class Retention:
    def __init__(self, *, book: AgreementBook, audit: AccessAudit, committer: GroupCommitter, every_s: float) -> None:
        self._book = book
        self._audit = audit
        self._committer = committer
        self._worker = Worker("parking-retention", self.run, every_s)

    def start(self) -> None:
        self._worker.start()

    async def stop(self) -> None:
        await self._worker.stop()

    async def run(self) -> None:
        """One round: every partner's expired history deleted, each deletion audited."""
        now = utcnow()
        for operator_id, (days, access) in self._book.retention(DATASET).items():
            item = usecases.Expire(operator_id=operator_id, before=now - timedelta(days=days))
            try:
                deleted: int = await self._committer.submit(usecases.expire_history, item)
            except Exception:
                log.exception("deleting %s's expired history failed; will retry", operator_id)
                continue
            if deleted:
                read = Read(
                    access=access, identity=ACTOR, purpose="retention", method="Retention", items=deleted, now=now
                )
                self._audit.record(read)
                log.info("deleted %d history rows of %s older than %d days", deleted, operator_id, days)
