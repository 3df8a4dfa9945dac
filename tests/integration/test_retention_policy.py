"""The city's retention (issue #20): adaptive steps older than their window become hourly summaries
(and those expire in turn), occupancy history and the optimizer's decisions are deleted beyond theirs,
in bounded rounds through the services' real group commit (real NATS, SQLite and PostgreSQL). Every
round is given its clock: nothing here depends on when the test runs."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from almere.partners.v1 import partners_pb2 as ppb
from almere.signals.v1 import signals_pb2 as spb
from prometheus_client import REGISTRY
from sqlalchemy import func, insert, select
from sqlmodel import Session, SQLModel, col

from apps.natsd import NatsServer
from services.common.config import Settings
from services.common.db import create_tables, make_engine
from services.common.housekeeping import Housekeeping
from services.common.runtime import Service, ServiceSpec
from services.optimizer import decision_retention
from services.optimizer.models import DecisionRow
from services.parking import history_retention
from services.parking.models import OccupancySample
from services.signals import compaction
from services.signals.models import HistoryRow, PlanRow, StepRow, StepSummaryRow
from tests.integration.helpers import Parking, Partners, Signals

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(days=20)  # beyond the 14 days raw steps are kept
HOUR = OLD.replace(minute=0)
PLAZA, RING = "stadhuisplein", "ring-east"


@pytest.fixture
async def start(settings: Settings, nats_server: NatsServer) -> AsyncIterator[Callable[..., Awaitable[Service]]]:
    """Starts a service in-process (as conftest's start_service) and hands back the Service itself.
    Its own scheduled ticks wait an hour: the tests run the rounds, each with its clock."""
    running: list[Service] = []

    async def run(spec: ServiceSpec, **overrides: object) -> Service:
        own = {"nats_nkey_seed_file": nats_server.keys[spec.name].seed_file, "scheduler_poll_seconds": 3600.0}
        service = Service(spec, settings.model_copy(update={**own, **overrides}))
        await service.start(port=0)
        running.append(service)
        return service

    yield run
    for service in reversed(running):
        await service.stop()


@pytest.fixture
async def signals(start: Callable[..., Awaitable[Service]], network_file: Path, tokens: dict[str, str]) -> Service:
    from services.signals.service import SPEC

    service = await start(SPEC, network_file=network_file)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.server.port}") as channel:
        await Signals(channel, tokens).as_("engineer").ImportNetwork(spb.ImportNetworkRequest())
    return service


def _step(
    intersection_id: str, sequence: int, time: datetime, cycle: float, actor: str = "optimizer"
) -> dict[str, Any]:
    return {
        "intersection_id": intersection_id,
        "sequence": sequence,
        "plan_version": 2,
        "time": time,
        "actor": actor,
        "phases": f"GGGg:{cycle - 5:g},yyyy:3,rrrr:2",
        "reason": "test",
    }


def _history(intersection_id: str, action: str, time: datetime) -> dict[str, Any]:
    return {
        "intersection_id": intersection_id,
        "version": 1,
        "time": time,
        "actor": "optimizer",
        "actor_role": "optimizer",
        "action": action,
        "plan_version": 2,
    }


def _history_actions(service: Service) -> list[str]:
    """The actions of the history rows this test wrote (the network import has another actor)."""
    with Session(service.engine) as session:
        rows = session.execute(
            select(col(HistoryRow.action)).where(col(HistoryRow.actor) == "optimizer").order_by(col(HistoryRow.time))
        )
        return list(rows.scalars())


def _insert(service: Service, table: type[SQLModel], rows: list[dict[str, Any]]) -> None:
    with Session(service.engine) as session, session.begin():
        session.execute(insert(table), rows)


def _count(service: Service, table: type[SQLModel]) -> int:
    with Session(service.engine) as session:
        return int(session.execute(select(func.count()).select_from(table)).scalar_one())


async def _rounds(service: Service, keeper: Housekeeping, now: datetime) -> int:
    """Rounds at `now` until the last found less than a full batch; how many ran."""
    ran = 0
    while ran == 0 or keeper.due is None:
        await service.committer.submit(keeper, now)
        ran += 1
        assert ran < 100, "retention never caught up"
    assert keeper.due == now + timedelta(seconds=service.settings.retention_check_seconds)
    return ran


def _summaries(service: Service) -> list[tuple[Any, ...]]:
    with Session(service.engine) as session:
        rows = session.execute(select(StepSummaryRow).order_by(col(StepSummaryRow.hour))).scalars()
        return [
            (
                r.intersection_id,
                r.hour,
                r.actor,
                r.steps,
                r.first_sequence,
                r.last_sequence,
                r.cycle_min_s,
                r.cycle_max_s,
                r.cycle_sum_s,
            )
            for r in rows
        ]


async def _listed_sequences(service: Service, tokens: dict[str, str], intersection: str) -> list[int]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.server.port}") as channel:
        reply = (
            await Signals(channel, tokens)
            .as_("engineer")
            .ListSteps(spb.ListStepsRequest(parent=f"intersections/{intersection}", page_size=100))
        )
    return [s.sequence for s in reply.steps]


async def _listed_summaries(service: Service, tokens: dict[str, str], intersection: str) -> list[tuple[Any, ...]]:
    """(hour, steps, first and last sequence, mean cycle) of every summary, read a page of one at a time."""
    listed: list[tuple[Any, ...]] = []
    token = ""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.server.port}") as channel:
        engineer = Signals(channel, tokens).as_("engineer")
        while True:
            request = spb.ListStepSummariesRequest(
                parent=f"intersections/{intersection}", page_size=1, page_token=token
            )
            reply = await engineer.ListStepSummaries(request)
            listed += [
                (
                    s.hour_start_time.ToDatetime(UTC),
                    s.step_count,
                    s.first_sequence,
                    s.last_sequence,
                    s.mean_cycle_seconds,
                )
                for s in reply.step_summaries
            ]
            if not (token := reply.next_page_token):
                return listed


@pytest.mark.parametrize("batch_rows", [1000, 2])
async def test_old_steps_become_hourly_summaries_and_the_audit_stays(
    signals: Service, tokens: dict[str, str], batch_rows: int
) -> None:
    minutes = [5, 20, 40, 70, 90]  # three steps in the first hour, two in the next
    _insert(
        signals,
        StepRow,
        [_step(PLAZA, n + 1, HOUR + timedelta(minutes=m), cycle=60 + 10 * n) for n, m in enumerate(minutes)]
        + [_step(PLAZA, 6, NOW - timedelta(days=1), cycle=90), _step(PLAZA, 7, NOW - timedelta(hours=1), cycle=90)]
        + [_step(RING, 1, OLD, cycle=60)],  # old, but the light's newest step: kept
    )
    # The history's record of those steps goes with them (the summaries say it); a takeover's stays.
    _insert(
        signals,
        HistoryRow,
        [
            _history(PLAZA, "steps_applied", HOUR + timedelta(minutes=5)),
            _history(PLAZA, "steps_applied", HOUR + timedelta(minutes=70)),
            _history(PLAZA, "steps_applied", NOW - timedelta(hours=1)),
            _history(PLAZA, "plan_activated", OLD - timedelta(days=1)),
        ],
    )
    plans, history = _count(signals, PlanRow), _count(signals, HistoryRow)
    keeper = compaction.housekeeping(signals.settings.model_copy(update={"retention_batch_rows": batch_rows}))

    await _rounds(signals, keeper, NOW)  # batches of 2: merged into the same hours over three rounds

    assert await _listed_sequences(signals, tokens, PLAZA) == [7, 6]
    assert await _listed_sequences(signals, tokens, RING) == [1]
    assert _summaries(signals) == [
        (PLAZA, HOUR, "optimizer", 3, 1, 3, 60.0, 80.0, 210.0),
        (PLAZA, HOUR + timedelta(hours=1), "optimizer", 2, 4, 5, 90.0, 100.0, 190.0),
    ]
    assert (_count(signals, PlanRow), _count(signals, HistoryRow)) == (plans, history - 2)
    assert _history_actions(signals) == ["plan_activated", "steps_applied"]
    # The summaries are read over gRPC, newest hour first, a page at a time.
    assert await _listed_summaries(signals, tokens, PLAZA) == [
        (HOUR + timedelta(hours=1), 2, 4, 5, 95.0),
        (HOUR, 3, 1, 3, 70.0),
    ]

    # Nothing more to do: the next round, when due, deletes nothing.
    later = NOW + timedelta(seconds=signals.settings.retention_check_seconds)
    await signals.committer.submit(keeper, later)
    assert _count(signals, StepRow) == 3 and len(_summaries(signals)) == 2

    # Nearly two years on those summaries go too, and step 6 is summarised; 7 stays (the light's newest).
    far = NOW + timedelta(days=signals.settings.retention_steps_summary_days - 5)
    await _rounds(signals, keeper, far)
    assert [(s[0], s[3], s[4]) for s in _summaries(signals)] == [(PLAZA, 1, 6)]
    assert await _listed_sequences(signals, tokens, PLAZA) == [7]
    assert _count(signals, PlanRow) == plans
    assert _history_actions(signals) == ["plan_activated"]


def _removed_total() -> float:
    labels = {"service": "signals", "table": "signals_step"}
    return REGISTRY.get_sample_value("almere_retention_removed_total", labels) or 0.0


async def test_a_compacted_light_numbers_its_next_steps_on_and_each_round_is_recorded(
    signals: Service, tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Its newest step is kept, so the sequence (usecases.light) goes on from it, never again from 1.
    The round that removed steps is logged once and counted; one with nothing to do is silent."""
    from services.signals import usecases

    _insert(signals, StepRow, [_step(PLAZA, n, OLD + timedelta(minutes=n), cycle=60) for n in range(1, 5)])
    keeper = compaction.housekeeping(signals.settings)
    counted = _removed_total()
    with caplog.at_level(logging.INFO, logger="services.common.housekeeping"):
        await _rounds(signals, keeper, NOW)
        await _rounds(signals, keeper, NOW + timedelta(days=1))
    assert [r.getMessage() for r in caplog.records] == [
        f"retention removed 3 signals_step rows older than {(NOW - timedelta(days=14)).isoformat()} "
        "into 1 hourly summaries"
    ]
    assert _removed_total() - counted == 3
    assert usecases.light(signals.engine, PLAZA).sequence == 4
    assert await _listed_sequences(signals, tokens, PLAZA) == [4]


async def test_occupancy_history_beyond_the_window_goes_and_agreements_still_delete_sooner(
    start: Callable[..., Awaitable[Service]], tokens: dict[str, str]
) -> None:
    from services.parking.service import SPEC as PARKING
    from services.partners.service import SPEC as PARTNERS

    now = datetime.now(UTC)  # partners' retention (services/common/retention.py) runs on the wall clock
    parking = await start(PARKING, retention_check_seconds=0.2)
    partners = await start(PARTNERS)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{parking.server.port}") as channel:
        client = Parking(channel, tokens)
        await client.create("garage-a", operator="op-a")
        await client.create("garage-b", operator="op-b")
    window = timedelta(days=parking.settings.retention_occupancy_history_days)
    ages = [window + timedelta(days=3), window + timedelta(days=1), window - timedelta(days=1), timedelta(days=2)]
    ages.append(timedelta(hours=1))
    _insert(
        parking,
        OccupancySample,
        [
            {"facility_id": f, "source_time": now - age, "occupied": n, "version": 1, "cause": 1}
            for f in ("garage-a", "garage-b")
            for n, age in enumerate(ages)
        ],
    )

    def kept() -> list[tuple[str, int]]:
        with Session(parking.engine) as session:
            query = select(col(OccupancySample.facility_id), col(OccupancySample.occupied))
            return [(f, n) for f, n in session.execute(query.order_by(col(OccupancySample.id)))]

    keeper = history_retention.housekeeping(parking.settings.model_copy(update={"retention_batch_rows": 3}))
    assert await _rounds(parking, keeper, now) == 2  # four samples beyond the window, at most three a round
    assert kept() == [("garage-a", n) for n in (2, 3, 4)] + [("garage-b", n) for n in (2, 3, 4)]

    # op-a's agreement keeps a day: the partner's retention deletes its history sooner than the city.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{partners.server.port}") as channel:
        registry = Partners(channel, tokens)
        await registry.as_("engineer").CreatePartner(
            ppb.CreatePartnerRequest(
                partner_id="op-a", partner=ppb.Partner(display_name="Garage A", kind=ppb.PARTNER_KIND_GARAGE_OPERATOR)
            )
        )
        await registry.as_("operator").SetAgreement(
            ppb.SetAgreementRequest(
                name="partners/op-a/agreements/occupancy",
                agreement=ppb.Agreement(
                    audiences=[ppb.AudienceTerms(audience=ppb.AUDIENCE_ENGINEER, detail=ppb.DETAIL_RAW)],
                    retention_days=1,
                    purposes=["traffic-management"],
                ),
            )
        )
    deadline = time.monotonic() + 10
    while kept() != [("garage-a", 4)] + [("garage-b", n) for n in (2, 3, 4)]:
        assert time.monotonic() < deadline, f"op-a's retention did not delete its history: {kept()}"
        await asyncio.sleep(0.05)
    # The city's next round has nothing left to delete.
    await parking.committer.submit(keeper, now + timedelta(seconds=parking.settings.retention_check_seconds))
    assert kept() == [("garage-a", 4)] + [("garage-b", n) for n in (2, 3, 4)]


def test_decisions_are_kept_as_long_as_the_optimizer_recalls_them(database_url: str, tmp_path: Path) -> None:
    """The optimizer's table alone (starting the optimizer needs a city network): bounded deletes."""
    engine = make_engine(database_url)
    create_tables(engine, [DecisionRow])
    settings = Settings(data_dir=tmp_path, database_url=database_url)
    keep = timedelta(days=settings.retention_decisions_days)
    ages = [keep + timedelta(hours=5), keep + timedelta(hours=1), keep - timedelta(hours=1)]
    with Session(engine) as session, session.begin():
        session.execute(
            insert(DecisionRow),
            [
                {"id": f"d{n}", "vehicle_id": "v", "lever": 1, "cause": f"c{n}", "time": NOW - age, "document": b""}
                for n, age in enumerate(ages)
            ],
        )
    for limit, removed, left in ((1, 1, ["d1", "d2"]), (5, 1, ["d2"]), (5, 0, ["d2"])):
        with Session(engine) as session, session.begin():
            assert decision_retention.expire_decisions(session, before=NOW - keep, limit=limit).rows == removed
        with Session(engine) as session:
            assert session.execute(select(col(DecisionRow.id)).order_by(col(DecisionRow.id))).scalars().all() == left
    engine.dispose()
