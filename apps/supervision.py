"""`almere up` keeps its services running: a service that exits is started again after a pause that
doubles with each quick failure (a crash loop does not spin the machine), and every exit and
restart is reported."""

from __future__ import annotations

from dataclasses import dataclass, field

from apps.stack import Stack


@dataclass(frozen=True, kw_only=True)
class Backoff:
    first_s: float = 1.0
    max_s: float = 60.0
    # A service up this long has recovered: its next failure waits `first_s` again.
    healthy_after_s: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.max_s, self.first_s * 2 ** max(0, failures - 1)))


@dataclass(kw_only=True)
class Supervisor:
    stack: Stack
    backoff: Backoff = field(default_factory=Backoff)
    _failures: dict[str, int] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)
    _due: dict[str, float] = field(default_factory=dict)

    def tick(self, now: float) -> list[str]:
        """Restart what is due; returns what happened, for the operator to read."""
        events = []
        for name, process in list(self.stack.processes.items()):
            code = process.poll()
            if code is None:
                if now - self._started.get(name, now) >= self.backoff.healthy_after_s:
                    self._failures[name] = 0
                continue
            if name not in self._due:
                failures = self._failures[name] = self._failures.get(name, 0) + 1
                delay = self.backoff.delay(failures)
                self._due[name] = now + delay
                log = self.stack.data_dir / f"{name}.log"
                events.append(f"service {name} exited with {code}; restart {failures} in {delay:g} s (log: {log})")
            elif now >= self._due[name]:
                del self._due[name]
                self.stack.restart(name)
                self._started[name] = now
                events.append(f"service {name} restarted (pid {self.stack.processes[name].pid})")
        return events
