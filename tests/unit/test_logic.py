"""Unit tests of the parking domain rules in services/parking/logic.py (no gRPC, no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from almere.parking.v1 import parking_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from services.common.errors import FailedPrecondition, InvalidArgument
from services.parking import logic
from services.parking.logic import Candidate, ReportOutcome, Thresholds

AMS = ZoneInfo("Europe/Amsterdam")
DEFAULT = Thresholds(0.90, 1.0, 0.03)
SPACES = pb.OCCUPANCY_STATUS_SPACES_AVAILABLE
ALMOST = pb.OCCUPANCY_STATUS_ALMOST_FULL
FULL = pb.OCCUPANCY_STATUS_FULL
NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)


# --- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "garage-a", "p1", "a" * 63, "park-and-ride-2"])
def test_validate_id_accepts_well_formed_ids(value: str) -> None:
    assert logic.validate_id(value, "facility id") == value


@pytest.mark.parametrize("value", ["", "Garage", "1garage", "garage-", "-garage", "gar_age", "a" * 64, "é"])
def test_validate_id_rejects_malformed_ids(value: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        logic.validate_id(value, "facility id")
    assert err.value.message.startswith(f"facility id {value!r} is malformed")
    assert "lowercase letters, digits and hyphens" in err.value.message


def test_facility_id_from_name_strips_prefix() -> None:
    assert logic.facility_id_from_name("facilities/garage-a") == "garage-a"


def test_facility_id_from_name_requires_a_name() -> None:
    with pytest.raises(InvalidArgument, match=r"^facility is required \(facilities/\{facility\}\)$"):
        logic.facility_id_from_name("", "facility")


def test_facility_id_from_name_requires_prefix() -> None:
    with pytest.raises(InvalidArgument, match=r"name 'garages/a' must look like facilities/\{facility\}"):
        logic.facility_id_from_name("garages/a")


def test_facility_id_from_name_validates_the_id() -> None:
    with pytest.raises(InvalidArgument, match=r"^name id 'Bad_Id' is malformed"):
        logic.facility_id_from_name("facilities/Bad_Id")


# --- status ---------------------------------------------------------------------------------------


def test_derive_status_closed_wins_over_count() -> None:
    assert logic.derive_status(SPACES, 10, 100, DEFAULT, closed=True) == pb.OCCUPANCY_STATUS_CLOSED
    assert logic.derive_status(FULL, None, 100, DEFAULT, closed=True) == pb.OCCUPANCY_STATUS_CLOSED


def test_derive_status_unknown_without_count() -> None:
    assert logic.derive_status(FULL, None, 100, DEFAULT, closed=False) == pb.OCCUPANCY_STATUS_UNKNOWN


@pytest.mark.parametrize(
    ("occupied", "expected"),
    [(0, SPACES), (89, SPACES), (90, ALMOST), (99, ALMOST), (100, FULL), (120, FULL)],
)
def test_derive_status_from_spaces_available(occupied: int, expected: int) -> None:
    assert logic.derive_status(SPACES, occupied, 100, DEFAULT, closed=False) == expected


@pytest.mark.parametrize(
    ("previous", "occupied", "expected"),
    [
        (FULL, 98, FULL),  # within 3 % below full: stays full
        (FULL, 96, ALMOST),  # below full - hysteresis
        (FULL, 88, ALMOST),  # still within the almost-full hysteresis band
        (FULL, 86, SPACES),
        (ALMOST, 98, ALMOST),  # does not jump to full before reaching it
        (ALMOST, 88, ALMOST),  # within 3 % below almost_full: stays almost full
        (ALMOST, 86, SPACES),
        (SPACES, 88, SPACES),  # the band only holds a status, it does not raise one
        (pb.OCCUPANCY_STATUS_UNKNOWN, 98, ALMOST),
        (pb.OCCUPANCY_STATUS_CLOSED, 98, ALMOST),
    ],
)
def test_derive_status_hysteresis(previous: int, occupied: int, expected: int) -> None:
    assert logic.derive_status(previous, occupied, 100, DEFAULT, closed=False) == expected


SEPARATED_THRESHOLDS = [Thresholds(0.90, 1.0, 0.03), Thresholds(0.80, 0.95, 0.05), Thresholds(0.85, 1.0, 0.02)]


@st.composite
def oscillation(draw: st.DrawFn) -> tuple[Thresholds, int, list[int]]:
    """Counts within a band narrower than the hysteresis that straddles one threshold."""
    thresholds = draw(st.sampled_from(SEPARATED_THRESHOLDS))
    capacity = draw(st.integers(200, 5000))
    threshold = draw(st.sampled_from([thresholds.almost_full, thresholds.full]))
    width = int(thresholds.hysteresis * capacity) - 1
    centre = round(threshold * capacity)
    lo = centre - draw(st.integers(0, width))
    counts = draw(st.lists(st.integers(lo, lo + width), min_size=1, max_size=60))
    return thresholds, capacity, counts


@given(oscillation())
def test_derive_status_does_not_flicker(case: tuple[Thresholds, int, list[int]]) -> None:
    thresholds, capacity, counts = case
    status = pb.OCCUPANCY_STATUS_UNKNOWN
    seen = []
    for occupied in counts:
        status = logic.derive_status(status, occupied, capacity, thresholds, closed=False)
        seen.append(status)
    changes = sum(1 for a, b in zip(seen, seen[1:], strict=False) if a != b)
    assert changes <= 1, seen


# --- count reports --------------------------------------------------------------------------------


def test_reported_occupied_from_occupied_and_free_spaces() -> None:
    assert logic.reported_occupied(pb.ReportOccupancyRequest(occupied_spaces=42), 100) == 42
    assert logic.reported_occupied(pb.ReportOccupancyRequest(free_spaces=30), 100) == 70
    assert logic.reported_occupied(pb.ReportOccupancyRequest(free_spaces=0), 100) == 100
    assert logic.reported_occupied(pb.ReportOccupancyRequest(occupied_spaces=0), 100) == 0


def test_reported_occupied_requires_a_count() -> None:
    with pytest.raises(InvalidArgument, match="occupied_spaces or free_spaces is required"):
        logic.reported_occupied(pb.ReportOccupancyRequest(), 100)


@pytest.mark.parametrize("free", [-1, 101])
def test_reported_occupied_rejects_free_spaces_out_of_range(free: int) -> None:
    with pytest.raises(InvalidArgument, match=f"free_spaces must be between 0 and capacity 100, got {free}"):
        logic.reported_occupied(pb.ReportOccupancyRequest(free_spaces=free), 100)


def test_reported_occupied_rejects_negative() -> None:
    with pytest.raises(InvalidArgument, match="must not be negative, got -1"):
        logic.reported_occupied(pb.ReportOccupancyRequest(occupied_spaces=-1), 100)


def test_reported_occupied_allows_small_overshoot_but_not_far_above_capacity() -> None:
    # capacity 100 -> limit 125; capacity 20 -> limit 30 (at least 10 over)
    assert logic.reported_occupied(pb.ReportOccupancyRequest(occupied_spaces=125), 100) == 125
    assert logic.reported_occupied(pb.ReportOccupancyRequest(occupied_spaces=30), 20) == 30
    with pytest.raises(InvalidArgument, match=r"126 is far above capacity 100 \(at most 125 accepted\)"):
        logic.reported_occupied(pb.ReportOccupancyRequest(occupied_spaces=126), 100)
    with pytest.raises(InvalidArgument, match="at most 30 accepted"):
        logic.reported_occupied(pb.ReportOccupancyRequest(occupied_spaces=31), 20)


def _order(sequence: int, occupied: int, source_time: datetime) -> tuple[ReportOutcome, str]:
    return logic.order_report(
        sequence=sequence,
        occupied=occupied,
        source_time=source_time,
        last_sequence=5,
        last_reported=40,
        last_report_time=NOW,
    )


def test_order_report_first_report_is_accepted() -> None:
    outcome = logic.order_report(
        sequence=1, occupied=3, source_time=NOW, last_sequence=0, last_reported=None, last_report_time=None
    )
    assert outcome == (ReportOutcome.ACCEPTED, "")


def test_order_report_newer_sequence_is_accepted() -> None:
    assert _order(6, 41, NOW + timedelta(seconds=1)) == (ReportOutcome.ACCEPTED, "")
    assert _order(9, 10, NOW) == (ReportOutcome.ACCEPTED, "")  # same source time is not older


def test_order_report_same_sequence_same_count_is_duplicate() -> None:
    outcome, detail = _order(5, 40, NOW - timedelta(hours=1))
    assert outcome is ReportOutcome.DUPLICATE
    assert detail == "sequence 5 was already accepted"


def test_order_report_same_sequence_different_count_fails() -> None:
    with pytest.raises(FailedPrecondition, match="sequence 5 was already accepted with occupied_spaces 40, not 41"):
        _order(5, 41, NOW)


def test_order_report_lower_sequence_is_stale() -> None:
    outcome, detail = _order(4, 40, NOW + timedelta(minutes=1))
    assert outcome is ReportOutcome.STALE
    assert detail == "sequence 4 is older than the last accepted 5"


def test_order_report_newer_sequence_but_older_source_time_is_stale() -> None:
    outcome, detail = _order(6, 41, NOW - timedelta(seconds=1))
    assert outcome is ReportOutcome.STALE
    assert "before the last accepted count" in detail
    assert NOW.isoformat() in detail


# --- gate events ----------------------------------------------------------------------------------


def _event(direction: int, when: datetime | None = NOW) -> pb.GateEvent:
    event = pb.GateEvent(direction=direction)  # type: ignore[arg-type]
    if when is not None:
        ts = Timestamp()
        ts.FromDatetime(when)
        event.event_time.CopyFrom(ts)
    return event


def _batch(*events: pb.GateEvent, batch_id: str = "b1") -> pb.RecordGateEventsRequest:
    return pb.RecordGateEventsRequest(facility="facilities/g", batch_id=batch_id, events=events)


ENTRY, EXIT = pb.GATE_DIRECTION_ENTRY, pb.GATE_DIRECTION_EXIT


def test_validate_gate_batch_counts_entries_and_exits() -> None:
    early = NOW - timedelta(minutes=5)
    late = NOW - timedelta(minutes=1)
    batch = _batch(_event(ENTRY, early), _event(ENTRY, late), _event(EXIT, early), _event(ENTRY, early))
    entries, exits, latest = logic.validate_gate_batch(batch, NOW)
    assert (entries, exits) == (3, 1)
    assert latest == late


def test_validate_gate_batch_requires_batch_id() -> None:
    with pytest.raises(InvalidArgument, match="batch_id is required"):
        logic.validate_gate_batch(_batch(_event(ENTRY), batch_id=""), NOW)
    with pytest.raises(InvalidArgument, match="batch_id is required"):
        logic.validate_gate_batch(_batch(_event(ENTRY), batch_id="x" * 65), NOW)


def test_validate_gate_batch_rejects_empty_batch() -> None:
    with pytest.raises(InvalidArgument, match="batch 'b1' is empty"):
        logic.validate_gate_batch(_batch(), NOW)


def test_validate_gate_batch_size_limit() -> None:
    event = _event(EXIT)
    assert logic.validate_gate_batch(_batch(*[event] * 10_000), NOW)[:2] == (0, 10_000)
    with pytest.raises(InvalidArgument, match="has 10001 events; at most 10000"):
        logic.validate_gate_batch(_batch(*[event] * 10_001), NOW)


def test_validate_gate_batch_rejects_unspecified_direction() -> None:
    batch = _batch(_event(ENTRY), _event(pb.GATE_DIRECTION_UNSPECIFIED))
    with pytest.raises(InvalidArgument, match="event 1: direction must be ENTRY or EXIT"):
        logic.validate_gate_batch(batch, NOW)


def test_validate_gate_batch_requires_event_time() -> None:
    with pytest.raises(InvalidArgument, match="event 0: event_time is required"):
        logic.validate_gate_batch(_batch(_event(ENTRY, None)), NOW)


def test_validate_gate_batch_future_event_time() -> None:
    within_skew = NOW + timedelta(seconds=59)
    assert logic.validate_gate_batch(_batch(_event(ENTRY, within_skew)), NOW) == (1, 0, within_skew)
    with pytest.raises(InvalidArgument, match="is in the future"):
        logic.validate_gate_batch(_batch(_event(ENTRY), _event(EXIT, NOW + timedelta(seconds=61))), NOW)


@pytest.mark.parametrize(
    ("occupied", "entries", "exits", "expected"),
    [(10, 3, 1, 12), (None, 2, 0, 2), (2, 0, 5, 0), (None, 0, 4, 0), (0, 0, 0, 0)],
)
def test_apply_gate_counts_never_negative(occupied: int | None, entries: int, exits: int, expected: int) -> None:
    assert logic.apply_gate_counts(occupied, entries, exits) == expected
