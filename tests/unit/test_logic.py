"""Unit tests of the parking domain rules in services/parking/logic.py (no gRPC, no database)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from almere.parking.v1 import parking_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from libs.geo import haversine_m
from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.opening_hours import is_open
from services.parking import logic
from services.parking.logic import Bucket, Candidate, ReportOutcome, Thresholds

AMS = "Europe/Amsterdam"
DEFAULT = Thresholds(0.90, 1.0, 0.03)
SPACES, ALMOST = pb.OCCUPANCY_STATUS_SPACES_AVAILABLE, pb.OCCUPANCY_STATUS_ALMOST_FULL
FULL, CLOSED, UNKNOWN = pb.OCCUPANCY_STATUS_FULL, pb.OCCUPANCY_STATUS_CLOSED, pb.OCCUPANCY_STATUS_UNKNOWN
ENTRY, EXIT = pb.GATE_DIRECTION_ENTRY, pb.GATE_DIRECTION_EXIT
NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("value", ["a", "garage-a", "p1", "a" * 63, "park-and-ride-2"])
def test_validate_id_accepts_well_formed_ids(value: str) -> None:
    assert logic.validate_id(value, "facility id") == value


@pytest.mark.parametrize("value", ["", "Garage", "1garage", "garage-", "-garage", "gar_age", "a" * 64, "é"])
def test_validate_id_rejects_malformed_ids(value: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        logic.validate_id(value, "facility id")
    assert err.value.message.startswith(f"facility id {value!r} is malformed")
    assert "lowercase letters, digits and hyphens" in err.value.message


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", r"^facility is required \(facilities/\{id\}\)$"),
        ("garages/a", r"^facility 'garages/a' must look like facilities/\{id\}$"),
        ("facilities/Bad_Id", r"^facility id 'Bad_Id' is malformed"),
        ("facilities/", r"^facility id '' is malformed"),
    ],
)
def test_facility_id_from_name_rejects(name: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        logic.facility_id_from_name(name, "facility")


def test_facility_id_from_name_strips_prefix() -> None:
    assert logic.facility_id_from_name("facilities/garage-a") == "garage-a"


def test_derive_status_closed_and_unknown() -> None:
    assert logic.derive_status(previous=SPACES, occupied=10, capacity=100, thresholds=DEFAULT, closed=True) == CLOSED
    assert logic.derive_status(previous=FULL, occupied=None, capacity=100, thresholds=DEFAULT, closed=True) == CLOSED
    assert logic.derive_status(previous=FULL, occupied=None, capacity=100, thresholds=DEFAULT, closed=False) == UNKNOWN


@pytest.mark.parametrize(
    ("previous", "occupied", "expected"),
    [
        *[(SPACES, 0, SPACES), (SPACES, 89, SPACES), (SPACES, 90, ALMOST), (SPACES, 99, ALMOST)],
        *[(SPACES, 100, FULL), (SPACES, 120, FULL), (UNKNOWN, 98, ALMOST), (CLOSED, 98, ALMOST)],
        # full holds down to 97 %, then the almost-full band holds down to 87 %
        *[(FULL, 98, FULL), (FULL, 96, ALMOST), (FULL, 88, ALMOST), (FULL, 86, SPACES)],
        # almost full holds down to 87 %; a band only holds a status, it never raises one
        *[(ALMOST, 98, ALMOST), (ALMOST, 88, ALMOST), (ALMOST, 86, SPACES), (SPACES, 88, SPACES)],
    ],
)
def test_derive_status_thresholds_and_hysteresis(previous: int, occupied: int, expected: int) -> None:
    assert (
        logic.derive_status(previous=previous, occupied=occupied, capacity=100, thresholds=DEFAULT, closed=False)
        == expected
    )


@st.composite
def oscillation(draw: st.DrawFn) -> tuple[Thresholds, int, list[int]]:
    """Counts within a band narrower than the hysteresis that straddles one threshold."""
    separated = [Thresholds(0.90, 1.0, 0.03), Thresholds(0.80, 0.95, 0.05), Thresholds(0.85, 1.0, 0.02)]
    thresholds = draw(st.sampled_from(separated))
    capacity = draw(st.integers(200, 5000))
    threshold = draw(st.sampled_from([thresholds.almost_full, thresholds.full]))
    width = int(thresholds.hysteresis * capacity) - 1
    lo = round(threshold * capacity) - draw(st.integers(0, width))
    return thresholds, capacity, draw(st.lists(st.integers(lo, lo + width), min_size=1, max_size=60))


@given(oscillation())
def test_derive_status_does_not_flicker(case: tuple[Thresholds, int, list[int]]) -> None:
    thresholds, capacity, counts = case
    status: int = UNKNOWN
    seen: list[int] = []
    for occupied in counts:
        status = logic.derive_status(
            previous=status, occupied=occupied, capacity=capacity, thresholds=thresholds, closed=False
        )
        seen.append(status)
    assert sum(1 for a, b in itertools.pairwise(seen) if a != b) <= 1, seen


def _report(count: dict[str, int]) -> pb.ReportOccupancyRequest:
    request = pb.ReportOccupancyRequest(facility="facilities/g")
    for field, value in count.items():
        setattr(request, field, value)
    return request


@pytest.mark.parametrize(
    ("count", "capacity", "expected"),
    [
        ({"occupied_spaces": 42}, 100, 42),
        ({"occupied_spaces": 0}, 100, 0),
        ({"free_spaces": 30}, 100, 70),
        ({"free_spaces": 0}, 100, 100),
        ({"occupied_spaces": 125}, 100, 125),  # a little over capacity: at most capacity // 4 more
        ({"occupied_spaces": 30}, 20, 30),  # ... and always at least 10 more
    ],
)
def test_reported_occupied(count: dict[str, int], capacity: int, expected: int) -> None:
    assert logic.reported_occupied(_report(count), capacity) == expected


@pytest.mark.parametrize(
    ("count", "capacity", "message"),
    [
        ({}, 100, "occupied_spaces or free_spaces is required"),
        ({"free_spaces": -1}, 100, "free_spaces must be between 0 and capacity 100, got -1"),
        ({"free_spaces": 101}, 100, "free_spaces must be between 0 and capacity 100, got 101"),
        ({"occupied_spaces": -1}, 100, "occupied_spaces must not be negative, got -1"),
        ({"occupied_spaces": 126}, 100, r"126 is far above capacity 100 \(at most 125 accepted\)"),
        ({"occupied_spaces": 31}, 20, r"31 is far above capacity 20 \(at most 30 accepted\)"),
    ],
)
def test_reported_occupied_rejects(count: dict[str, int], capacity: int, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        logic.reported_occupied(_report(count), capacity)


def _order(sequence: int, occupied: int, source_time: datetime) -> tuple[ReportOutcome, str]:
    return logic.order_report(
        sequence=sequence,
        occupied=occupied,
        source_time=source_time,
        last_sequence=5,
        last_reported=40,
        last_report_time=NOW,
    )


def test_order_report_accepts_first_and_newer_reports() -> None:
    first = logic.order_report(
        sequence=1, occupied=3, source_time=NOW, last_sequence=0, last_reported=None, last_report_time=None
    )
    assert first == (ReportOutcome.ACCEPTED, "")
    assert _order(6, 41, NOW + timedelta(seconds=1)) == (ReportOutcome.ACCEPTED, "")
    assert _order(9, 10, NOW) == (ReportOutcome.ACCEPTED, "")  # same source time is not older


def test_order_report_duplicate_and_conflict() -> None:
    duplicate = _order(5, 40, NOW - timedelta(hours=1))
    assert duplicate == (ReportOutcome.DUPLICATE, "sequence 5 was already accepted")
    with pytest.raises(FailedPrecondition, match=r"accepted with occupied_spaces 40, not 41$"):
        _order(5, 41, NOW)


def test_order_report_stale() -> None:
    by_sequence = _order(4, 40, NOW + timedelta(minutes=1))
    assert by_sequence == (ReportOutcome.STALE, "sequence 4 is older than the last accepted 5")
    outcome, detail = _order(6, 41, NOW - timedelta(seconds=1))
    assert outcome is ReportOutcome.STALE
    assert detail.endswith(f"before the last accepted count ({NOW.isoformat()})")


def _event(direction: pb.GateDirection.ValueType, when: datetime | None = NOW) -> pb.GateEvent:
    event = pb.GateEvent(direction=direction, gate_id="lane-1")
    if when is not None:
        ts = Timestamp()
        ts.FromDatetime(when)
        event.event_time.CopyFrom(ts)
    return event


def _batch(*events: pb.GateEvent, batch_id: str = "b1") -> pb.RecordGateEventsRequest:
    return pb.RecordGateEventsRequest(facility="facilities/g", batch_id=batch_id, events=events)


def test_validate_gate_batch_counts_entries_and_exits() -> None:
    early, late = NOW - timedelta(minutes=5), NOW - timedelta(minutes=1)
    batch = _batch(_event(ENTRY, early), _event(ENTRY, late), _event(EXIT, early), _event(ENTRY, early))
    assert logic.validate_gate_batch(batch, NOW) == (3, 1, late)
    within_skew = NOW + timedelta(seconds=59)  # field clocks may run up to a minute ahead
    assert logic.validate_gate_batch(_batch(_event(EXIT, within_skew)), NOW) == (0, 1, within_skew)


def test_validate_gate_batch_size_limit() -> None:
    event = _event(EXIT)
    assert logic.validate_gate_batch(_batch(*[event] * 10_000), NOW)[:2] == (0, 10_000)
    with pytest.raises(InvalidArgument, match="batch 'b1' has 10001 events; at most 10000"):
        logic.validate_gate_batch(_batch(*[event] * 10_001), NOW)


@pytest.mark.parametrize(
    ("batch", "message"),
    [
        (_batch(_event(ENTRY), batch_id=""), "batch_id is required"),
        (_batch(_event(ENTRY), batch_id="x" * 65), "batch_id is required"),
        (_batch(), "batch 'b1' is empty"),
        (
            _batch(_event(ENTRY), _event(pb.GATE_DIRECTION_UNSPECIFIED)),
            "batch 'b1' event 1: direction must be ENTRY or EXIT",
        ),
        (_batch(_event(ENTRY, None)), "batch 'b1' event 0: event_time is required"),
        (
            _batch(_event(ENTRY), _event(EXIT, NOW + timedelta(seconds=61))),
            r"batch 'b1' event_time 2025-06-02T12:01:01\+00:00 is in the future",
        ),
    ],
)
def test_validate_gate_batch_rejects(batch: pb.RecordGateEventsRequest, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        logic.validate_gate_batch(batch, NOW)


@pytest.mark.parametrize(
    ("occupied", "entries", "exits", "want"),
    [(10, 3, 1, 12), (None, 2, 0, 2), (2, 0, 5, 0), (None, 0, 4, 0), (0, 0, 0, 0)],
)
def test_apply_gate_counts_never_negative(occupied: int | None, entries: int, exits: int, want: int) -> None:
    assert logic.apply_gate_counts(occupied, entries, exits) == want


def _local(day: int, hour: int, minute: int = 0) -> datetime:
    """A June 2025 wall-clock time in Amsterdam, as UTC (is_open must convert it back)."""
    return datetime(2025, 6, day, hour, minute, tzinfo=ZoneInfo(AMS)).astimezone(UTC)


MONDAY_DAY = [{"day_of_week": 1, "opens": "07:00", "closes": "19:00"}]
FRIDAY_NIGHT = [{"day_of_week": 5, "opens": "22:00", "closes": "02:00"}]
SUNDAY_NIGHT = [{"day_of_week": 7, "opens": "23:00", "closes": "01:00"}]


@pytest.mark.parametrize(
    ("windows", "when", "expected"),
    [
        ([], _local(8, 3), True),  # no windows: always open
        (MONDAY_DAY, _local(2, 6, 59), False),  # 2 June 2025 is a Monday
        (MONDAY_DAY, _local(2, 7), True),
        (MONDAY_DAY, _local(2, 18, 59), True),
        (MONDAY_DAY, _local(2, 19), False),
        (MONDAY_DAY, _local(3, 12), False),  # Tuesday
        # The same UTC clock is 07:30 local in summer (UTC+2) but 06:30 local in winter (UTC+1).
        (MONDAY_DAY, datetime(2025, 6, 2, 5, 30, tzinfo=UTC), True),
        (MONDAY_DAY, datetime(2025, 1, 6, 5, 30, tzinfo=UTC), False),
        (MONDAY_DAY, datetime(2025, 1, 6, 17, 30, tzinfo=UTC), True),
        (MONDAY_DAY, datetime(2025, 6, 2, 17, 30, tzinfo=UTC), False),
        *[(FRIDAY_NIGHT, _local(6, 21, 59), False), (FRIDAY_NIGHT, _local(6, 22), True)],
        (FRIDAY_NIGHT, _local(7, 1), True),  # Saturday 01:00
        *[(FRIDAY_NIGHT, _local(7, 1, 59), True), (FRIDAY_NIGHT, _local(7, 2), False)],
        (FRIDAY_NIGHT, _local(7, 3), False),  # Saturday 03:00
        (FRIDAY_NIGHT, _local(8, 1), False),  # Sunday 01:00
        (SUNDAY_NIGHT, _local(9, 0, 30), True),  # wraps around the end of the week into Monday
        (SUNDAY_NIGHT, _local(9, 1, 30), False),
        (MONDAY_DAY + FRIDAY_NIGHT, _local(7, 1), True),
        # closing at the opening time runs for 24 hours, past midnight
        ([{"day_of_week": 1, "opens": "07:00", "closes": "07:00"}], _local(3, 6, 59), True),
        ([{"day_of_week": 1, "opens": "07:00", "closes": "07:00"}], _local(3, 7), False),
    ],
)
def test_is_open(windows: list[dict[str, object]], when: datetime, expected: bool) -> None:
    assert is_open(windows, AMS, when) is expected


def test_is_open_on_the_spring_forward_night() -> None:
    # Sunday 30 March 2025: 02:00 CET jumps to 03:00 CEST. Window Sunday 01:00-04:00 local.
    windows = [{"day_of_week": 7, "opens": "01:00", "closes": "04:00"}]
    assert is_open(windows, AMS, datetime(2025, 3, 30, 0, 30, tzinfo=UTC))  # 01:30 CET
    assert is_open(windows, AMS, datetime(2025, 3, 30, 1, 30, tzinfo=UTC))  # 03:30 CEST
    assert not is_open(windows, AMS, datetime(2025, 3, 30, 2, 30, tzinfo=UTC))  # 04:30 CEST


T0 = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
TEN = timedelta(minutes=10)


def _at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_bucket_history_carries_prior_and_weights_by_time() -> None:
    samples = [(_at(5), 20), (_at(12), 5), (_at(18), 8)]
    first, second, third = logic.bucket_history(prior=10, samples=samples, start=T0, end=_at(30), width=TEN)
    assert first == Bucket(start=T0, min=10, max=20, mean=15.0, last=20, samples=1, known=True)
    # 2 min at 20 (carried over), 6 min at 5, 2 min at 8
    assert second == Bucket(start=_at(10), min=5, max=20, mean=second.mean, last=8, samples=2, known=True)
    assert second.mean == pytest.approx((2 * 20 + 6 * 5 + 2 * 8) / 10)
    assert third == Bucket(start=_at(20), min=8, max=8, mean=8.0, last=8, samples=0, known=True)


def test_bucket_history_unknown_before_first_count() -> None:
    buckets = logic.bucket_history(prior=None, samples=[(_at(15), 30)], start=T0, end=_at(30), width=TEN)
    assert [b.known for b in buckets] == [False, True, True]
    assert buckets[0] == Bucket(start=T0, min=0, max=0, mean=0.0, last=0, samples=0, known=False)
    assert buckets[1] == Bucket(start=_at(10), min=30, max=30, mean=30.0, last=30, samples=1, known=True)


def test_bucket_history_last_bucket_is_truncated_at_end() -> None:
    buckets = logic.bucket_history(prior=4, samples=[(_at(12), 0)], start=T0, end=_at(14), width=TEN)
    assert [b.start for b in buckets] == [T0, _at(10)]
    assert buckets[1] == Bucket(
        start=_at(10), min=0, max=4, mean=2.0, last=0, samples=1, known=True
    )  # 2 min at 4, 2 min at 0


def test_bucket_min_max_ignore_a_count_that_held_for_no_time() -> None:
    # Counters reporting on whole minutes put a sample exactly on each bucket's start.
    buckets = logic.bucket_history(
        prior=10, samples=[(T0, 50), (_at(10), 80), (_at(20), 20)], start=T0, end=_at(30), width=TEN
    )
    assert [(b.min, b.max, b.mean) for b in buckets] == [(50, 50, 50.0), (80, 80, 80.0), (20, 20, 20.0)]


ALMERE_CENTRUM = (52.3753, 5.2179)


def test_haversine_almere_to_amsterdam_centraal() -> None:
    assert haversine_m(*ALMERE_CENTRUM, 52.3791, 4.9003) == pytest.approx(21_600, rel=0.01)
    assert haversine_m(*ALMERE_CENTRUM, *ALMERE_CENTRUM) == 0.0


def _candidate(name: str, north: float, occ: int | None = 10, status: int = SPACES, op: bool = True) -> Candidate:
    """A facility `north` metres north of the destination, capacity 100."""
    lat = ALMERE_CENTRUM[0] + north / 111_195.0
    return Candidate(
        facility_id=name,
        latitude=lat,
        longitude=ALMERE_CENTRUM[1],
        capacity=100,
        occupied=occ,
        status=status,
        open_at_arrival=op,
    )


def _rank(candidates: list[Candidate], limit: int = 10) -> list[str]:
    lat, lng = ALMERE_CENTRUM
    return [c.facility_id for c, _, _, _ in logic.rank(candidates, lat=lat, lng=lng, max_walk_m=1500.0, limit=limit)]


def test_rank_excludes_unusable_facilities() -> None:
    candidates = [
        _candidate("ok", 300),
        _candidate("full-status", 100, 50, FULL),
        _candidate("closed", 100, 50, CLOSED),
        _candidate("closed-at-arrival", 100, 50, op=False),
        _candidate("no-room", 100, 100, ALMOST),
        _candidate("too-far", 1600, 0),
    ]
    assert _rank(candidates) == ["ok"]


def test_rank_prefers_nearer_and_reports_walk_and_score() -> None:
    ranked = logic.rank(
        [_candidate("far", 800), _candidate("near", 200)],
        lat=ALMERE_CENTRUM[0],
        lng=ALMERE_CENTRUM[1],
        max_walk_m=1500.0,
        limit=5,
    )
    assert [c.facility_id for c, _, _, _ in ranked] == ["near", "far"]
    _, walk, score, drive = ranked[0]
    assert drive == 0  # no travel times asked for: ranked by walking distance
    assert walk == pytest.approx(200, rel=0.01)
    assert score == pytest.approx(walk + 1000 * 0.1**4)


def test_rank_penalises_nearly_full() -> None:
    candidates = [_candidate("nearly-full", 100, 95), _candidate("roomy", 400, 10)]
    assert _rank(candidates) == ["roomy", "nearly-full"]


def test_rank_respects_limit() -> None:
    candidates = [_candidate(f"f{i}", 100 * i) for i in (3, 1, 5, 2, 4)]
    assert _rank(candidates, limit=2) == ["f1", "f2"]
    assert _rank(candidates, limit=0) == []


def test_rank_unknown_occupancy_behind_equally_near_with_room() -> None:
    unknown = _candidate("a-unknown", 300, None, UNKNOWN)
    assert _rank([unknown, _candidate("b-known", 300, 50)]) == ["b-known", "a-unknown"]
