"""Bounds on what callers may hold at once, and a log that speaks once per interval however often
it is asked: a flood of bad calls must not become a flood of log lines."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from services.common.errors import ResourceExhausted


class StreamSlots:
    """Counts the response streams (Watches) open, per caller and in the process; one over either
    limit is refused. One event loop serves every call, so plain counters suffice."""

    def __init__(self, *, per_caller: int, total: int) -> None:
        self.per_caller = per_caller
        self.total = total
        self._open: Counter[str] = Counter()
        self._all = 0

    @contextlib.contextmanager
    def hold(self, caller: str) -> Iterator[None]:
        """A slot for one stream of `caller` while the block runs; ResourceExhausted when none is free."""
        held = self._open[caller]
        if held >= self.per_caller:
            raise ResourceExhausted(
                f"caller {caller} has {held} watch streams open (limit {self.per_caller}); close one first"
            )
        if self._all >= self.total:
            raise ResourceExhausted(
                f"this server has {self._all} watch streams open (limit {self.total}); retry with backoff"
            )
        self._open[caller] += 1
        self._all += 1
        try:
            yield
        finally:
            self._all -= 1
            self._open[caller] -= 1
            if not self._open[caller]:
                del self._open[caller]


class LogThrottle:
    """Logs the first event of each kind per `interval` seconds and counts the others, reported in
    the next line of that kind. Kinds must be few (a reason, never a caller-chosen value)."""

    def __init__(self, logger: logging.Logger, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._quiet_until: dict[str, float] = {}
        self._suppressed: Counter[str] = Counter()

    def warning(self, kind: str, message: str, *args: Any, extra: dict[str, Any]) -> bool:
        """Log `message % args` with `extra` and the count of events since the last line, or count
        this one; returns whether it was logged."""
        now = self._clock()
        if now < self._quiet_until.get(kind, float("-inf")):
            self._suppressed[kind] += 1
            return False
        self._quiet_until[kind] = now + self._interval
        suppressed = self._suppressed.pop(kind, 0)
        self._logger.warning(
            f"{message} ({suppressed} more since the last such line)", *args, extra={**extra, "suppressed": suppressed}
        )
        return True
