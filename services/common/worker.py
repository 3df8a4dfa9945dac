"""A background task that does its work whenever woken (and every `poll` seconds), stopped by a flag.

Stopping by flag rather than by cancelling keeps work in flight intact (a commit running in a thread
must deliver its results), and avoids Python 3.11's wait_for swallowing a cancellation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable


class Worker:
    def __init__(self, name: str, step: Callable[[], Awaitable[None]], poll: float | None = None) -> None:
        self._name = name
        self._step = step
        self._poll = poll
        self._wakeup = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._stopping

    def wake(self) -> None:
        self._wakeup.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        """Finish the current step, run one last step, then end."""
        self._stopping = True
        self._wakeup.set()
        if self._task is not None:
            await self._task
            self._task = None

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll):
                    await self._wakeup.wait()
            self._wakeup.clear()
            await self._step()
        await self._step()
