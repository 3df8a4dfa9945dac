"""A short what-if end to end: the twin plays the collision with the services (what-if service and
its worker included), the control room asks for two plans from the twin's exact state and from the
live picture when the police report the collision, adopts the better one, and gets the forecast of
doing nothing checked against what then happened in the twin."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from almere.incidents.v1 import incidents_pb2 as ipb
from almere.incidents.v1 import incidents_pb2_grpc
from almere.whatif.v1 import whatif_pb2 as w
from almere.whatif.v1 import whatif_pb2_grpc

from apps.coupled import coupled_stack
from apps.whatif import client
from sim.runner import RunSpec, run_many

pytestmark = pytest.mark.e2e

HORIZON_MIN = 30  # the shortest the service accepts


def test_a_what_if_from_the_twin_is_ranked_adopted_and_checked(tmp_path: Path) -> None:
    # The collision is at 1800 s; the twin runs on until the horizon after it has passed.
    spec = RunSpec(
        scenario="almere-centrum-incident",
        mode="coordinated",
        seed=1,
        out_root=tmp_path,
        end_s=1800 + (HORIZON_MIN + 3) * 60,
        scale=0.3,
        adaptive_signals=False,
        clock="realtime",
        # The collision lasts 30 simulated minutes: at 50x, 36 s for the what-if's eight runs and the
        # adoption to land before it clears, with the other test worker busy beside it.
        pace=50,
    )
    with coupled_stack([spec], lambda _: None, stack_dir=tmp_path / "stack") as stack, ThreadPoolExecutor(1) as pool:
        auth = (("authorization", f"Bearer {stack.credentials['engineer']}"),)
        twin = pool.submit(run_many, [replace(spec, services_dir=stack.data_dir)], workers=1)
        with stack.blocking_channel("incidents") as channel:
            incident = client.wait_for_incident(channel, auth, timeout_s=120)
        do_nothing, close = client.response_plans(incident)[:2]
        asked = w.WhatIf(title="collision", horizon_minutes=HORIZON_MIN, seeds=2, plans=[do_nothing, close])
        asked.start_sources.extend([w.START_SOURCE_TWIN_STATE, w.START_SOURCE_LIVE_PICTURE])
        with stack.blocking_channel("whatif") as channel:
            done = client.run_what_if(channel, auth, asked, timeout_s=300)
            assert done.state == w.WhatIf.STATE_SUCCEEDED, done.error
            assert done.runs_done == done.runs_total == 2 * 2 * 2
            assert 1800 <= done.start_sim_time_seconds < 1800 + 10 * 60  # "now" was the collision
            for source in (w.START_SOURCE_TWIN_STATE, w.START_SOURCE_LIVE_PICTURE):
                results = [r for r in done.results if r.start_source == source]
                assert sorted(r.rank for r in results) == [1, 2]
                for r in results:
                    delay = r.kpis["network_delay_h"]
                    assert len(delay.per_seed) == 2 and delay.min <= delay.mean <= delay.max and delay.mean > 0
            assert {e.plan_id for e in done.start_errors} == {"do-nothing", "close-and-detour"}
            assert (tmp_path / done.report_path).is_file()
            # Only an engineer adopts.
            with pytest.raises(grpc.RpcError) as refused:
                client.adopt(channel, (("authorization", f"Bearer {stack.credentials['sim']}"),), done.name, "x")
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            adopted = client.adopt(channel, auth, done.name, "close-and-detour")
            assert adopted.what_if.adopted_plan_id == "close-and-detour" and adopted.changes
            checked = client.wait_for_checks(channel, auth, done.name, timeout_s=300)
            score = whatif_pb2_grpc.WhatIfServiceStub(channel).GetForecastScore(
                w.GetForecastScoreRequest(), metadata=auth
            )
        kpis = {c.kpi for c in checked.checks}
        assert "network_delay_h" in kpis and all(c.observed >= 0 for c in checked.checks)
        assert {s.kpi for s in score.scores} >= kpis and all(s.checks >= 1 for s in score.scores)
        # The plan's closure reached the incident service: the road is closed now.
        with stack.blocking_channel("incidents") as channel:
            now = incidents_pb2_grpc.IncidentServiceStub(channel).GetIncident(
                ipb.GetIncidentRequest(name=incident.name), metadata=auth
            )
        assert not incident.impact.full_closure and now.incident.impact.full_closure
        twin.result()
