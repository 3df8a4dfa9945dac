"""The twin's traffic-light controllers: plans the signal service activates, and priority it grants,
arrive on JetStream (stream SIGNALS) and are applied to SUMO's lights. Every application is logged
with its apply latency (wall time from the event to SUMO)."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from pathlib import Path
from typing import Any

import nats
from almere.signals.v1 import events_pb2
from almere.signals.v1 import signals_pb2 as spb
from nats.js.api import ConsumerConfig, DeliverPolicy

SUBJECTS = ("almere.signals.v1.plan_activated.*", "almere.signals.v1.priority_decided.*")
SUMO_TYPES = {spb.PLAN_TYPE_STATIC: 0, spb.PLAN_TYPE_ACTUATED: 3}


class SignalControllers:
    """Listens in a thread of its own (the runner's loop is synchronous) and applies between steps."""

    def __init__(self, nats_url: str, log_path: Path) -> None:
        self._events: queue.Queue[events_pb2.SignalEvent] = queue.Queue()
        self._log = log_path.open("a")
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=asyncio.run, args=(self._listen(nats_url),), daemon=True)
        self._thread.start()
        # The plans in force must be applied before the first step: wait for that backlog.
        self._ready.wait(10)
        self.applied = 0

    async def _listen(self, url: str) -> None:
        nc = await nats.connect(url)
        js = nc.jetstream()
        backlog = 0
        for subject in SUBJECTS:
            info = await js.stream_info("SIGNALS", subjects_filter=subject)
            backlog += len(info.state.subjects or {})
        subscriptions = []
        for subject in SUBJECTS:
            # The plan in force per intersection first (last per subject), then every new one.
            config = ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
            subscriptions.append(await js.subscribe(subject, stream="SIGNALS", ordered_consumer=True, config=config))
        received = 0
        try:
            while not self._stop.is_set():
                if received >= backlog:
                    self._ready.set()
                for sub in subscriptions:
                    try:
                        msg = await sub.next_msg(timeout=0.05)
                    except nats.errors.TimeoutError:
                        continue
                    self._events.put(events_pb2.SignalEvent.FromString(msg.data))
                    received += 1
        finally:
            await nc.close()

    def apply(self, sumo: Any, sim_s: float) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            tls = event.intersection.sumo_tls_id
            change = event.change
            if change.event == "plan_activated":
                plan = change.plan
                phases = [
                    sumo.trafficlight.Phase(p.duration, p.state, p.min_duration or -1, p.max_duration or -1)
                    for p in plan.phases
                ]
                program = f"v{plan.version}"
                sumo.trafficlight.setProgramLogic(
                    tls, sumo.trafficlight.Logic(program, SUMO_TYPES[plan.type], 0, phases)
                )
                sumo.trafficlight.setProgram(tls, program)
                what: dict[str, object] = {"plan_version": plan.version}
            elif change.priority.decision == spb.PRIORITY_DECISION_GRANTED:
                hold = change.priority.hold_until.seconds - change.priority.eta.seconds + 10
                sumo.trafficlight.setPhase(tls, change.priority.target_phase_index)
                sumo.trafficlight.setPhaseDuration(tls, hold)
                what = {"priority": change.priority.vehicle_id, "phase": change.priority.target_phase_index}
            else:
                continue
            latency = time.time() - (change.occur_time.seconds + change.occur_time.nanos / 1e9)
            record = {"sim_s": sim_s, "tls": tls, "event": change.event, "apply_latency_s": round(latency, 3), **what}
            self._log.write(json.dumps(record) + "\n")
            self.applied += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._log.close()
