"""`almere demo` (make demo): start the whole stack on this machine, play the scenes, save a transcript."""

from __future__ import annotations

import asyncio
import shutil
import signal
import time

from apps.demo import incidents, parking, partners, reports, signals, simulation, whatif
from apps.stack import Stack, dev_callers
from services.common.config import Settings


def run_demo(settings: Settings, *, full: bool = False, keep: bool = False) -> int:
    """The six scenes; `keep`: then leave the dashboard showing the coordinated run until Ctrl-C."""
    run_dir = (settings.data_dir / "demo").resolve()
    shutil.rmtree(run_dir, ignore_errors=True)
    stack = Stack(
        settings=settings.model_copy(update={"data_dir": run_dir, "tokens_file": None, "tokens": None}),
        callers=dev_callers("engineer", "operator", "police", "ems", "optimizer", "sim", "partner"),  # the scenes' cast
    )
    stack.start()
    print(stack.describe(), flush=True)
    transcript: list[str] = []

    def say(line: str) -> None:
        transcript.append(line)
        print(line, flush=True)

    async def scenes() -> list[bool]:
        say("\n== 1. A garage fills up ==")
        filled = await parking.play(stack.channel("parking"), stack.credentials, say)
        say("\n== 2. Police report a collision that closes a lane ==")
        reported = await incidents.play(
            stack.channel("incidents"),
            nats_url=stack.endpoints["nats"],
            bus=stack.bus_options("observer"),
            tokens=stack.credentials,
            say=say,
        )
        say("\n== 3. Signal timing: a festival plan, an ambulance and a bus ==")
        timed = await signals.play(stack.channel("signals"), stack.credentials, say)
        say("\n== 4. Private partners: a garage operator's terms, a security firm's report ==")
        shared = await partners.play(
            partners=stack.channel("partners"),
            parking=stack.channel("parking"),
            gateway=stack.endpoints["gateway"],
            tokens=stack.credentials,
            say=say,
        )
        verified = await reports.play(
            partners=stack.channel("partners"),
            incidents=stack.channel("incidents"),
            optimizer=stack.channel("optimizer"),
            tokens=stack.credentials,
            say=say,
        )
        return [filled, reported, timed, shared and verified]

    started = time.monotonic()
    try:
        results = asyncio.run(scenes())
    finally:
        stack.stop()
    say(f"\n[demo] scenes 1-4 in {time.monotonic() - started:.0f} s wall")
    say("\n== 5. The digital twin: the incident + event morning, without, with SUMO's and with our coordination ==")
    results.append(simulation.play(run_dir / "sim", say, full=full))
    say(f"[demo] scenes 1-5 in {time.monotonic() - started:.0f} s wall")
    say("\n== 6. What if: at the collision, three response plans simulated forward, the best adopted ==")
    results.append(whatif.play(run_dir / "whatif", say))
    say(f"[demo] scenes 1-6 in {time.monotonic() - started:.0f} s wall")
    out = run_dir / "demo.txt"
    out.write_text("\n".join(transcript) + "\n")
    print(f"\ntranscript saved to {out}")
    if keep:
        _show(simulation.coordinated_stack(run_dir / "sim", full=full))
    return 0 if all(results) else 1


def _show(stack: Stack) -> None:
    """Serves the coordinated run's city and report on the dashboard until Ctrl-C or SIGTERM."""
    stack.start()  # Ctrl-C meanwhile interrupts it; the finally stops what started
    stopping = {signal.SIGINT, signal.SIGTERM}
    try:
        print(f"\nThe coordinated run as it ended, and its report, on the {stack.dashboard()}", flush=True)
        print("Ctrl-C stops it.", flush=True)
        # Blocked, then waited for: no handler runs in the middle of anything (the services, started
        # before, keep their own signals).
        signal.pthread_sigmask(signal.SIG_BLOCK, stopping)
        signal.sigwait(stopping)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, stopping)
        stack.stop()
