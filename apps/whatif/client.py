"""A control room's side of a what-if, for the demo's scene and the benchmark: wait for an incident,
ask for three response plans against it, wait for the forecasts, read them as a table, adopt."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import grpc
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.incidents.v1 import incidents_pb2_grpc
from almere.optimizer.v1 import optimizer_pb2 as opb
from almere.whatif.v1 import whatif_pb2 as w
from almere.whatif.v1 import whatif_pb2_grpc
from google.protobuf.field_mask_pb2 import FieldMask

IN_FORCE = (ipb.INCIDENT_STATE_ACTIVE, ipb.INCIDENT_STATE_CONFIRMED, ipb.INCIDENT_STATE_CLEARING)
# The KPIs a table shows, with their labels.
SHOWN = (
    ("network_delay_h", "delay h"),
    ("through_travel_time_s", "through s"),
    ("visitor_door_to_door_s", "visitors s"),
    ("incident_queue_veh", "queue"),
)
Metadata = tuple[tuple[str, str], ...]
SIGNS_SHARE = 0.8  # drivers following advice shown on the signs as well as in their apps


def wait_for_incident(channel: grpc.Channel, auth: Metadata, *, timeout_s: float = 600) -> ipb.Incident:
    """The first incident in force on a network edge, once the police (or the twin) report it."""
    incidents = incidents_pb2_grpc.IncidentServiceStub(channel)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = incidents.ListIncidents(ipb.ListIncidentsRequest(states=IN_FORCE), metadata=auth)
        located = [i for i in listed.incidents if i.network_location.edge_id]
        if located:
            return located[0]
        time.sleep(0.2)
    raise TimeoutError(f"no incident reported within {timeout_s:.0f} s")


def response_plans(incident: ipb.Incident) -> list[w.ResponsePlan]:
    """Three answers to an incident: leave it to the lane closure the police set ("do nothing"),
    close the road and send the equipped drivers round it, or keep it open and let adaptive lights
    and guidance spread the traffic."""
    close = w.ResponsePlan(
        plan_id="close-and-detour",
        title=f"Close {incident.network_location.edge_id} and detour",
        closures=[w.Closure(incident=incident.name, edge_id=incident.network_location.edge_id, full_closure=True)],
        strategy=opb.Strategy(incident_rerouting=True),
        strategy_mask=FieldMask(paths=["incident_rerouting"]),
    )
    # Advice on the variable message signs too: most drivers follow it, not only the equipped share.
    adaptive = w.ResponsePlan(
        plan_id="adaptive-and-guidance",
        title="Adaptive lights everywhere, rerouting and parking guidance also on the signs",
        signals=[w.SignalArea(control=w.SIGNAL_CONTROL_ADAPTIVE)],
        strategy=opb.Strategy(congestion_rerouting=True, parking_guidance=True, equipped_share=SIGNS_SHARE),
        strategy_mask=FieldMask(paths=["congestion_rerouting", "parking_guidance", "equipped_share"]),
    )
    return [w.ResponsePlan(plan_id="do-nothing", title="Do nothing"), close, adaptive]


def run_what_if(
    channel: grpc.Channel,
    auth: Metadata,
    what_if: w.WhatIf,
    *,
    progress: Callable[[w.WhatIf], None] = lambda _: None,
    timeout_s: float = 900,
) -> w.WhatIf:
    """Create the what-if and wait until it has its answer (SUCCEEDED or FAILED)."""
    stub = whatif_pb2_grpc.WhatIfServiceStub(channel)
    created = stub.CreateWhatIf(w.CreateWhatIfRequest(what_if=what_if), metadata=auth).what_if
    deadline = time.monotonic() + timeout_s
    done = -1
    while time.monotonic() < deadline:
        current = stub.GetWhatIf(w.GetWhatIfRequest(name=created.name), metadata=auth).what_if
        if current.runs_done != done:
            done = current.runs_done
            progress(current)
        if current.state != w.WhatIf.STATE_RUNNING:
            return current
        time.sleep(0.5)
    raise TimeoutError(f"{created.name} still running after {timeout_s:.0f} s")


def wait_for_checks(channel: grpc.Channel, auth: Metadata, name: str, *, timeout_s: float = 900) -> w.WhatIf:
    """The what-if once the twin has run past its horizon and the forecasts are checked."""
    stub = whatif_pb2_grpc.WhatIfServiceStub(channel)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        current = stub.GetWhatIf(w.GetWhatIfRequest(name=name), metadata=auth).what_if
        if current.checks:
            return current
        time.sleep(1)
    raise TimeoutError(f"no forecast check of {name} within {timeout_s:.0f} s")


def _spread(summary: w.KpiSummary) -> str:
    return f"{summary.mean:8.1f} ({summary.min:.1f}-{summary.max:.1f})"


def ranking(what_if: w.WhatIf) -> list[str]:
    """The plans of each start, best first: each KPI's mean and its seeds' range."""
    lines = []
    for source in sorted({r.start_source for r in what_if.results}):
        results = sorted((r for r in what_if.results if r.start_source == source), key=lambda r: r.rank)
        lines.append(f"from {w.StartSource.Name(source).removeprefix('START_SOURCE_').lower().replace('_', ' ')}:")
        header = "".join(f" | {label:>20}" for _, label in SHOWN)
        lines.append(f"  rank | {'plan':<22} | score{header}")
        for r in results:
            cells = "".join(f" | {_spread(r.kpis[k]):>20}" for k, _ in SHOWN if k in r.kpis)
            lines.append(f"  {r.rank:>4} | {r.plan_id:<22} | {r.score:5.2f}{cells}")
    return lines


def best_plan(what_if: w.WhatIf, source: w.StartSource.ValueType = w.START_SOURCE_TWIN_STATE) -> str:
    """The best-ranked plan from `source` (else from any start)."""
    ranked: Sequence[w.PlanResult] = [r for r in what_if.results if r.start_source == source] or what_if.results
    return min(ranked, key=lambda r: r.rank).plan_id


def adopt(channel: grpc.Channel, auth: Metadata, name: str, plan_id: str) -> w.AdoptPlanResponse:
    stub = whatif_pb2_grpc.WhatIfServiceStub(channel)
    reply: w.AdoptPlanResponse = stub.AdoptPlan(w.AdoptPlanRequest(name=name, plan_id=plan_id), metadata=auth)
    return reply


def checks(what_if: w.WhatIf) -> list[str]:
    """Each forecast check: the forecast against what happened in the twin."""
    return [
        f"  {w.StartSource.Name(c.start_source).removeprefix('START_SOURCE_').lower():<13} {c.kpi:<24} "
        f"forecast {c.forecast:9.1f}  observed {c.observed:9.1f}  error {100 * c.relative_error:+6.1f} %"
        f"  {'within' if c.within_spread else 'outside'} the seeds' spread"
        for c in what_if.checks
    ]
