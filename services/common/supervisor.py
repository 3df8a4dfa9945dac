"""Several serving processes of one service on one port (SO_REUSEPORT) and one outbox-relay process,
under a parent that starts them, stops them in order and ends them all when one dies.

Why processes: a Python gRPC service is bound by its GIL long before the machine's cores are busy;
each process has a GIL of its own. The relay gets a process of its own so that publishing to
JetStream takes no GIL time from serving, and there is exactly one relay however many processes
serve. Serving processes wake it after each commit through a pipe they share.

The children are spawned (not forked: the parent may hold threads and connections) and die with the
parent (Linux: PR_SET_PDEATHSIG), so a SIGKILL of the parent, as Kubernetes sends after the grace
period, leaves no process serving on the port.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1

# What a child runs, given its index and its end of the wake-up pipe. Must pickle (spawn): a
# module-level function or a functools.partial of one.
ServingChild = Callable[[int, Connection], None]
RelayChild = Callable[[Connection], None]


def die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when its parent ends (Linux; elsewhere a no-op), and
    end now if the parent already has."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        os._exit(1)


def wake_writer(end: Connection) -> Callable[[], None]:
    """A serving process's call to wake the relay: one byte on the shared pipe, never blocking (a
    full pipe already holds a wake-up)."""
    fd = end.fileno()
    os.set_blocking(fd, False)

    def wake() -> None:
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(fd, b"\0")

    return wake


def supervise(*, name: str, processes: int, serving: ServingChild, relay: RelayChild, grace: float) -> int:
    """Run `relay(wake)` in one child and `serving(index, wake)` in `processes` children (tables
    created before: they start at once) until SIGTERM or SIGINT (stops the serving children first,
    so what they commit last is relayed) or until a child dies (then all stop, exit status 1, and
    whoever runs us starts us again)."""
    ctx = multiprocessing.get_context("spawn")
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    wake_read, wake_write = ctx.Pipe(duplex=False)
    relay_process = ctx.Process(target=relay, args=(wake_read,), name=f"{name}-relay")
    relay_process.start()
    servers: list[BaseProcess] = []
    status = 0
    try:
        for index in range(processes):
            server = ctx.Process(target=serving, args=(index, wake_write), name=f"{name}-serve-{index}")
            server.start()
            servers.append(server)
        log.info("serving", extra={"service": name, "processes": processes})
        children = [relay_process, *servers]
        while not stopping.is_set():
            dead = [p for p in children if not p.is_alive()]
            if dead:
                log.error("%s exited with %s; stopping the others", dead[0].name, dead[0].exitcode)
                status = 1
                break
            wait([p.sentinel for p in children], timeout=0.5)
    finally:
        _stop(servers, grace)
        _stop([relay_process], grace)
    return status


def _stop(children: list[Any], grace: float) -> None:
    """SIGTERM, then SIGKILL whoever has not ended within the grace (plus commit and publish time)."""
    for child in children:
        if child.is_alive():
            child.terminate()
    for child in children:
        child.join(grace + 10)
        if child.is_alive():
            log.warning("%s did not stop in time; killing it", child.name)
            child.kill()
            child.join()
