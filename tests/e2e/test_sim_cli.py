"""`almere sim run` as a user runs it: modes none and sumo finish with KPIs and a report with plots,
also coupled to a stack it starts itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sim.decision_applier import RETRY_S

pytestmark = pytest.mark.e2e


def almere(*args: str, timeout: float = 300) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALMERE_")}
    result = subprocess.run(
        [sys.executable, "-m", "apps.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def test_sim_run_in_both_modes_writes_kpis_and_a_report(tmp_path: Path) -> None:
    out = almere(
        "sim",
        "run",
        "almere-centrum-incident",
        "--mode",
        "none",
        "--mode",
        "sumo",
        "--end",
        "1200",
        "--scale",
        "0.4",
        "--out",
        str(tmp_path),
    )
    report = tmp_path / "almere-centrum-incident" / "report" / "report.md"
    assert f"report: {report}" in out
    text = report.read_text()
    assert "almere-centrum-incident / none (n=1)" in text and "almere-centrum-incident / sumo (n=1)" in text
    assert (report.parent / "speed.png").exists() and (report.parent / "travel_time.png").exists()
    for mode in ("none", "sumo"):
        kpis = json.loads((tmp_path / "almere-centrum-incident" / f"{mode}-seed1" / "kpis.json").read_text())
        assert kpis["vehicles_departed"] > 0


def test_sim_run_with_services_plays_the_field_devices(tmp_path: Path) -> None:
    almere(
        "sim", "run", "almere-centrum-incident", "--services", "--end", "600", "--scale", "0.3", "--out", str(tmp_path)
    )
    devices = json.loads((tmp_path / "almere-centrum-incident" / "none-seed1" / "devices.json").read_text())
    # Counters report with their operators' tokens (a refusal would have failed the run) and the
    # signal service's plans for all 22 lights reached SUMO.
    assert devices["occupancy_reports"] > 0 and devices["decisions_applied"] == 22


def test_sim_run_coordinated_closes_the_loop_with_the_optimizer(tmp_path: Path) -> None:
    """The twin reports equipped vehicles, the optimizer hears the police and the garages through the
    services, and its decisions reach SUMO vehicles; the report compares it with SUMO's built-ins."""
    almere(
        "sim",
        "run",
        "almere-centrum-incident",
        "--mode",
        "sumo",
        "--mode",
        "coordinated",
        "--end",
        "2400",
        "--scale",
        "0.5",
        "--out",
        str(tmp_path),
    )
    run = tmp_path / "almere-centrum-incident" / "coordinated-seed1"
    devices = json.loads((run / "devices.json").read_text())
    assert devices["vehicle_reports"] == 2400 // 30 and devices["occupancy_reports"] > 0
    assert devices["equipped_share"] == 0.5  # the optimizer's strategy, set from --equipped
    # The lights are the optimizer's: every one taken over, a step each time a controller changed one.
    assert devices["lights_awaiting_approval"] == devices["lights_refused"] == []
    assert devices["signal_steps"] > 2400 // 10
    applied = [json.loads(line) for line in (run / "applied.jsonl").read_text().splitlines()]
    levers = {entry["lever"] for entry in applied}
    assert {"LEVER_PARKING_GUIDANCE", "LEVER_INCIDENT_REROUTING"} <= levers
    # A round's guidance reaches the cars 2 simulated s after the report (RunSpec.decision_latency_s),
    # however fast the optimizer or the bus were; later only for a car crossing a junction then.
    guided = [e["sim_s"] for e in applied if e["lever"] == "LEVER_PARKING_GUIDANCE"]
    assert all(2 <= t % 30 <= 2 + RETRY_S for t in guided) and sum(t % 30 == 2 for t in guided) > len(guided) / 2
    # The collision starts at 1800 s: its reroutes come from the police report, not from travel times.
    reroutes = [e for e in applied if e["lever"] == "LEVER_INCIDENT_REROUTING"]
    assert min(e["sim_s"] for e in reroutes) >= 1800 and all(e["trigger"]["edge"] == "j22-j32" for e in reroutes)
    report = (tmp_path / "almere-centrum-incident" / "report" / "report.md").read_text()
    assert (
        "## Targets: almere-centrum-incident" in report
        and "| visitors searching more than 5 minutes | sumo |" in report
    )


def test_bench_signals_prints_delay_and_the_ratio_to_fixed_time(tmp_path: Path) -> None:
    out = almere(
        "sim",
        "bench-signals",
        "--maps",
        "cologne8",
        "--seeds",
        "1",
        "--end",
        "600",
        "--controllers",
        "fixed,ours",
        "--out",
        str(tmp_path),
    )
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("fixed ", "ours "))}
    assert rows["fixed"][-1] == "1.000"
    assert 0 < float(rows["ours"][-1]) < 1.0, "ours should beat the network's own fixed-time programs"
    results = json.loads((tmp_path / "results.json").read_text())
    assert {r["controller"] for r in results} == {"fixed", "ours"}
    assert all(r["teleports"] == 0 and not r["gridlock"] for r in results)


@pytest.mark.parametrize("mode", ["sumo", "coordinated"])
def test_an_ambulance_gets_green_at_every_light_on_its_way(tmp_path: Path, mode: str) -> None:
    """The ambulance asks the signal service (as ems) before each light; every grant turns its
    approach green, through a yellow, before it arrives: held by the twin's lights (mode sumo), or
    served by the optimizer's controller of that light through its adaptive steps (coordinated)."""
    almere(
        "sim",
        "run",
        "almere-centrum-emergency",
        "--mode",
        mode,
        "--services",
        "--end",
        "2200",
        "--out",
        str(tmp_path),
    )
    run = tmp_path / "almere-centrum-emergency" / f"{mode}-seed1"
    crossings = [json.loads(line) for line in (run / "priority.jsonl").read_text().splitlines()]
    assert [c["tls"] for c in crossings] == ["j02", "j12", "j22"]  # the Stadsdreef's lights, in order
    for c in crossings:
        assert c["decision"] == "PRIORITY_DECISION_GRANTED" and c["state"] in ("G", "g"), c
        assert 0 < c["sim_s"] - c["asked_s"] <= 30, c  # asked before, green on arrival
    kpis = json.loads((run / "kpis.json").read_text())
    assert kpis["responder_travel_time_s"]["mean"] > 0
