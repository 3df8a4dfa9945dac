"""Parking domain rules: validation, derived status with hysteresis, report ordering, gate counts,
history buckets and ranking. No gRPC, no NATS, no database: everything here tests on its own."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from enum import Enum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from almere.parking.v1 import parking_pb2 as pb

from libs.geo import WALK_DETOUR, WALK_SPEED_MPS, haversine_m
from services.common.auth import Identity, Role
from services.common.clock import MIN_TIME, from_timestamp
from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.common.geo import validate_lat_lng
from services.common.names import id_from_name, validate_id
from services.common.opening_hours import DEFAULT_TIME_ZONE, parse_clock

NAME_PREFIX = "facilities/"
MAX_CAPACITY = 100_000
MAX_EDGES = 64
MAX_STALE_AFTER_S = 7 * 86400
MAX_BATCH_EVENTS = 10_000
# Report sequences are stored as signed 64-bit integers (SQL BIGINT): a field system's counter or
# epoch milliseconds fit many times over.
MAX_SEQUENCE = 2**63 - 1
# Clocks of field systems drift; a count "from the future" beyond this is a client bug.
CLOCK_SKEW = timedelta(seconds=60)
DEFAULT_THRESHOLDS = (0.90, 1.0, 0.03)

Status = int  # an almere.parking.v1.OccupancyStatus value


def facility_id_from_name(name: str, field: str = "name") -> str:
    """`facilities/garage-a` -> `garage-a`."""
    return id_from_name(name, "facilities", field)


def facility_name(facility_id: str) -> str:
    return NAME_PREFIX + facility_id


# --- authorisation -------------------------------------------------------------------------------

# Who creates facilities and writes any of them. The twin's garage counters report with their
# operators' tokens, as counters in the city do: it needs no parking role of its own.
MANAGERS = frozenset({Role.ENGINEER})
# Who may call the writing RPCs at all; which facilities an operator writes is authorize_write's.
WRITERS = frozenset({*MANAGERS, Role.OPERATOR})


class NotItsOwn(PermissionDenied):
    """An operator writing another's facility: refused, and put in the owner's audit."""

    def __init__(self, message: str, *, owner: str) -> None:
        super().__init__(message)
        self.owner = owner


def authorize_write(identity: Identity, facility_id: str, operator_id: str) -> None:
    """Engineers write any facility; an operator only its own."""
    if identity.role in MANAGERS:
        return
    if identity.role is Role.OPERATOR and identity.subject == operator_id:
        return
    raise NotItsOwn(f"{identity.role_name} may not write facility {facility_id!r}", owner=operator_id)


# --- facility validation -------------------------------------------------------------------------


def validate_facility(f: pb.Facility) -> None:
    """Checks a complete facility (after create or after merging an update)."""
    if not f.display_name.strip() or len(f.display_name) > 200:
        raise InvalidArgument("display_name is required (at most 200 characters)")
    if f.kind == pb.FACILITY_KIND_UNSPECIFIED or f.kind not in pb.FacilityKind.values():
        raise InvalidArgument("kind must be one of FACILITY_KIND_GARAGE, _PARK_AND_RIDE, _ON_STREET_ZONE, ...")
    validate_id(f.operator_id, "operator_id")
    if not 1 <= f.capacity <= MAX_CAPACITY:
        raise InvalidArgument(f"capacity must be between 1 and {MAX_CAPACITY}, got {f.capacity}")
    if f.HasField("location"):
        validate_lat_lng(f.location.latitude, f.location.longitude, "location")
    if len(f.entrance_edge_ids) > MAX_EDGES or any(not 0 < len(e) <= 128 for e in f.entrance_edge_ids):
        raise InvalidArgument(f"entrance_edge_ids: at most {MAX_EDGES} non-empty ids of at most 128 characters")
    if len(f.sumo_parking_area_id) > 128:
        raise InvalidArgument("sumo_parking_area_id is longer than 128 characters")
    if len(f.opening_hours) > 28:
        raise InvalidArgument("opening_hours: at most 28 windows")
    for i, w in enumerate(f.opening_hours):
        if not 1 <= w.day_of_week <= 7:
            raise InvalidArgument(f"opening_hours[{i}].day_of_week must be 1 (Monday) to 7 (Sunday)")
        parse_clock(w.opens, f"opening_hours[{i}].opens")
        parse_clock(w.closes, f"opening_hours[{i}].closes")
    try:
        ZoneInfo(f.time_zone)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder such as "Europe"
        raise InvalidArgument(f"time_zone {f.time_zone!r} is not an IANA time zone") from None
    if f.state not in (pb.FACILITY_STATE_OPEN, pb.FACILITY_STATE_CLOSED):
        raise InvalidArgument("state must be FACILITY_STATE_OPEN or FACILITY_STATE_CLOSED")
    if f.HasField("stale_after"):
        seconds = f.stale_after.seconds + f.stale_after.nanos / 1e9
        if not (0 <= f.stale_after.nanos <= 999_999_999 and 0 <= seconds <= MAX_STALE_AFTER_S):
            raise InvalidArgument(f"stale_after must be between 0 and {MAX_STALE_AFTER_S} s, got {seconds} s")
    t = f.thresholds
    if not (0 < t.almost_full <= t.full <= 1.5 and 0 <= t.hysteresis <= 0.5):
        raise InvalidArgument(
            "thresholds need 0 < almost_full <= full <= 1.5 and 0 <= hysteresis <= 0.5, "
            f"got {t.almost_full}, {t.full}, {t.hysteresis}"
        )


def is_stale(count_time: datetime | None, stale_after_s: float | None, *, now: datetime) -> bool:
    """Whether a facility watched for silence (stale_after_s) has no count measured within it."""
    if not stale_after_s:
        return False
    return count_time is None or (now - count_time).total_seconds() > stale_after_s


def apply_defaults(f: pb.Facility) -> None:
    if not f.time_zone:
        f.time_zone = DEFAULT_TIME_ZONE
    if f.state == pb.FACILITY_STATE_UNSPECIFIED:
        f.state = pb.FACILITY_STATE_OPEN
    if not f.HasField("thresholds"):
        f.thresholds.almost_full, f.thresholds.full, f.thresholds.hysteresis = DEFAULT_THRESHOLDS


# --- status --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    almost_full: float
    full: float
    hysteresis: float


def thresholds_from(message: pb.StatusThresholds) -> Thresholds:
    return Thresholds(message.almost_full, message.full, message.hysteresis)


def derive_status(
    *, previous: Status, occupied: int | None, capacity: int, thresholds: Thresholds, closed: bool
) -> Status:
    """Status from the count, staying almostFull/full until the ratio drops `hysteresis` below."""
    if closed:
        return pb.OCCUPANCY_STATUS_CLOSED
    if occupied is None:
        return pb.OCCUPANCY_STATUS_UNKNOWN
    ratio = occupied / capacity
    band = thresholds.hysteresis
    if ratio >= thresholds.full or (previous == pb.OCCUPANCY_STATUS_FULL and ratio >= thresholds.full - band):
        return pb.OCCUPANCY_STATUS_FULL
    if ratio >= thresholds.almost_full or (
        previous in (pb.OCCUPANCY_STATUS_FULL, pb.OCCUPANCY_STATUS_ALMOST_FULL)
        and ratio >= thresholds.almost_full - band
    ):
        return pb.OCCUPANCY_STATUS_ALMOST_FULL
    return pb.OCCUPANCY_STATUS_SPACES_AVAILABLE


# --- count reports -------------------------------------------------------------------------------


def plausible_limit(capacity: int) -> int:
    """Counts may overshoot capacity a little (miscounts, staff cars), not by much."""
    return capacity + max(10, capacity // 4)


def reported_occupied(request: pb.ReportOccupancyRequest, capacity: int) -> int:
    which = request.WhichOneof("count")
    if which is None:
        raise InvalidArgument("occupied_spaces or free_spaces is required")
    if which == "free_spaces":
        if not 0 <= request.free_spaces <= capacity:
            raise InvalidArgument(f"free_spaces must be between 0 and capacity {capacity}, got {request.free_spaces}")
        return capacity - request.free_spaces
    if request.occupied_spaces < 0:
        raise InvalidArgument(f"occupied_spaces must not be negative, got {request.occupied_spaces}")
    if request.occupied_spaces > plausible_limit(capacity):
        raise InvalidArgument(
            f"occupied_spaces {request.occupied_spaces} is far above capacity {capacity} "
            f"(at most {plausible_limit(capacity)} accepted)"
        )
    return request.occupied_spaces


def validate_source_time(when: datetime, now: datetime, field: str) -> None:
    if when > now + CLOCK_SKEW:
        raise InvalidArgument(f"{field} {when.isoformat()} is in the future (server time {now.isoformat()})")


class ReportOutcome(Enum):
    ACCEPTED = pb.REPORT_OUTCOME_ACCEPTED
    DUPLICATE = pb.REPORT_OUTCOME_DUPLICATE
    STALE = pb.REPORT_OUTCOME_STALE


def order_report(
    *,
    sequence: int,
    occupied: int,
    source_time: datetime,
    last_sequence: int,
    last_reported: int | None,
    last_report_time: datetime | None,
) -> tuple[ReportOutcome, str]:
    """Decide whether a count report is new, a repeat, or older than what was accepted."""
    if sequence == last_sequence:
        if occupied != last_reported:
            raise FailedPrecondition(
                f"sequence {sequence} was already accepted with occupied_spaces {last_reported}, not {occupied}"
            )
        return ReportOutcome.DUPLICATE, f"sequence {sequence} was already accepted"
    if sequence < last_sequence:
        return ReportOutcome.STALE, f"sequence {sequence} is older than the last accepted {last_sequence}"
    if last_report_time is not None and source_time < last_report_time:
        return (
            ReportOutcome.STALE,
            f"measured at {source_time.isoformat()}, before the last accepted count ({last_report_time.isoformat()})",
        )
    return ReportOutcome.ACCEPTED, ""


def validate_gate_batch(request: pb.RecordGateEventsRequest, now: datetime) -> tuple[int, int, datetime]:
    """Return (entries, exits, latest event time) of a well-formed batch."""
    if not request.batch_id or len(request.batch_id) > 64:
        raise InvalidArgument("batch_id is required (at most 64 characters)")
    if not request.events:
        raise InvalidArgument(f"batch {request.batch_id!r} is empty")
    if len(request.events) > MAX_BATCH_EVENTS:
        raise InvalidArgument(
            f"batch {request.batch_id!r} has {len(request.events)} events; at most {MAX_BATCH_EVENTS}"
        )
    entries = exits = 0
    latest = MIN_TIME
    for i, e in enumerate(request.events):
        if e.direction == pb.GATE_DIRECTION_ENTRY:
            entries += 1
        elif e.direction == pb.GATE_DIRECTION_EXIT:
            exits += 1
        else:
            raise InvalidArgument(f"batch {request.batch_id!r} event {i}: direction must be ENTRY or EXIT")
        if not e.HasField("event_time"):
            raise InvalidArgument(f"batch {request.batch_id!r} event {i}: event_time is required")
        latest = max(latest, from_timestamp(e.event_time, f"batch {request.batch_id!r} event {i}: event_time"))
    validate_source_time(latest, now, f"batch {request.batch_id!r} event_time")
    return entries, exits, latest


def apply_gate_counts(occupied: int | None, entries: int, exits: int) -> int:
    """Gate counts move the count; it never goes below zero (a missed entry is common)."""
    return max(0, (occupied or 0) + entries - exits)


# --- history -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Bucket:
    start: datetime
    min: int
    max: int
    mean: float
    last: int
    samples: int
    known: bool


def rounded(bucket: Bucket, to: int) -> Bucket:
    """A bucket's counts rounded to a multiple of `to` (a partner's agreement)."""

    def r(value: float) -> int:
        return round(value / to) * to

    return replace(bucket, min=r(bucket.min), max=r(bucket.max), mean=float(r(bucket.mean)), last=r(bucket.last))


def bucket_history(
    *, prior: int | None, samples: list[tuple[datetime, int]], start: datetime, end: datetime, width: timedelta
) -> list[Bucket]:
    """Time-weighted buckets of a piecewise-constant count. `prior` is the count in force at `start`."""
    buckets: list[Bucket] = []
    value = prior
    i = 0
    b_start = start
    while b_start < end:
        b_end = min(b_start + width, end)
        # The count carried in from before counts only if it held for some time in this bucket.
        carried = value if not (i < len(samples) and samples[i][0] <= b_start) else None
        lo = hi = carried
        weighted = 0.0
        known_seconds = 0.0
        count = 0
        t = b_start
        while i < len(samples) and samples[i][0] < b_end:
            when, new_value = samples[i]
            if value is not None:
                weighted += value * (when - t).total_seconds()
                known_seconds += (when - t).total_seconds()
            t, value = when, new_value
            lo = value if lo is None else min(lo, value)
            hi = value if hi is None else max(hi, value)
            count += 1
            i += 1
        if value is not None:
            weighted += value * (b_end - t).total_seconds()
            known_seconds += (b_end - t).total_seconds()
        if value is None:
            buckets.append(Bucket(start=b_start, min=0, max=0, mean=0.0, last=0, samples=count, known=False))
        else:
            mean = weighted / known_seconds if known_seconds > 0 else float(value)
            buckets.append(
                Bucket(
                    start=b_start,
                    min=int(lo or 0),
                    max=int(hi or 0),
                    mean=mean,
                    last=value,
                    samples=count,
                    known=True,
                )
            )
        b_start = b_end
    return buckets


# --- recommendation ------------------------------------------------------------------------------

# An unknown count is treated as this full: guidance prefers facilities it knows have room.
UNKNOWN_RATIO = 0.9


@dataclass(frozen=True, kw_only=True)
class Candidate:
    facility_id: str
    latitude: float
    longitude: float
    capacity: int
    occupied: int | None
    status: Status
    open_at_arrival: bool


def score(walk_m: float, ratio: float) -> float:
    """Walk metres plus a penalty that grows steeply as the facility fills (searching and queueing)."""
    return walk_m + 1000.0 * min(ratio, 1.0) ** 4


def timed_score(drive_s: float, walk_m: float, ratio: float) -> float:
    """The same in seconds, when the drive is known: drive + walk (along streets) + the fill penalty
    as walking time."""
    return drive_s + (WALK_DETOUR * walk_m + 1000.0 * min(ratio, 1.0) ** 4) / WALK_SPEED_MPS


def rank(
    candidates: list[Candidate],
    *,
    lat: float,
    lng: float,
    max_walk_m: float,
    limit: int,
    drive_s: dict[str, float] | None = None,
) -> list[tuple[Candidate, float, float, float]]:
    """Open facilities with room within walking distance, best first: (candidate, walk, score, drive).
    With `drive_s` (seconds from the driver to each facility) the score is in seconds, and facilities
    the driver cannot reach are left out."""
    ranked = []
    for c in candidates:
        if not c.open_at_arrival or c.status in (pb.OCCUPANCY_STATUS_FULL, pb.OCCUPANCY_STATUS_CLOSED):
            continue
        if c.occupied is not None and c.occupied >= c.capacity:
            continue
        walk = haversine_m(c.latitude, c.longitude, lat, lng)
        if walk > max_walk_m:
            continue
        ratio = UNKNOWN_RATIO if c.occupied is None else c.occupied / c.capacity
        if drive_s is None:
            ranked.append((c, walk, score(walk, ratio), 0.0))
        elif c.facility_id in drive_s:
            drive = drive_s[c.facility_id]
            ranked.append((c, walk, timed_score(drive, walk, ratio), drive))
    ranked.sort(key=lambda r: (r[2], r[0].facility_id))
    return ranked[:limit]
