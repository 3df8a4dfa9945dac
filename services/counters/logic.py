"""The counter rules: whose counters, what a counter and a count must hold, and what a counter feed may
not carry (anything but counts). No gRPC, no database."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timedelta

from almere.counters.v1 import counters_pb2 as pb

from services.common.access import ANY_CALLER
from services.common.auth import PUBLIC_SAFETY, Identity, Role
from services.common.clock import from_timestamp
from services.common.errors import InvalidArgument, PermissionDenied
from services.common.geo import validate_lat_lng
from services.common.names import validate_id
from services.common.terms import Access, rounded

MAX_COUNTS = 500
MAX_COUNT = 100_000
MAX_DIRECTIONS = 8
MAX_INTERVAL = timedelta(hours=1)
CLOCK_SKEW = timedelta(seconds=30)
DIRECTION = re.compile(r"^[a-z]+(-[a-z]+)*$")
NAME = re.compile(r"^partners/([^/]+)/counters/([^/]+)$")

# Who registers counters: the partner itself, or the city for it.
KEEPERS = frozenset({Role.PARTNER, Role.ENGINEER})
# Who reads counters' descriptions: the city's callers, public safety, and a partner its own.
DESCRIPTION_READERS = frozenset({Role.ENGINEER, Role.OPTIMIZER, Role.SIM, *PUBLIC_SAFETY, Role.PARTNER})
# Who reads counts: anyone the partner's agreement names (the public through the open-data feeds).
COUNT_READERS = frozenset({*ANY_CALLER, Role.PARTNER, Role.PUBLIC})
OWN = {Role.PARTNER: "its own counters only"}


def counter_name(partner_id: str, counter_id: str) -> str:
    return f"partners/{partner_id}/counters/{counter_id}"


def parse_name(name: str, field: str = "name") -> tuple[str, str]:
    """(partner id, counter id) of `partners/{partner}/counters/{counter}`."""
    match = NAME.match(name)
    if not match:
        raise InvalidArgument(f"{field} must look like partners/{{partner}}/counters/{{counter}}, not {name!r}")
    return validate_id(match[1], f"{field} (partner)"), validate_id(match[2], f"{field} (counter)")


def parse_list_parent(parent: str) -> str | None:
    """The partner id of `partners/{partner}`; None for `partners/-` (every partner's)."""
    return None if parent == "partners/-" else parse_parent(parent)


def parse_parent(parent: str) -> str:
    """The partner id of `partners/{partner}`."""
    if not parent.startswith("partners/"):
        raise InvalidArgument(f"parent must look like partners/{{partner}}, not {parent!r}")
    return validate_id(parent.removeprefix("partners/"), "parent")


def check_owner(identity: Identity, partner_id: str) -> None:
    """A partner keeps and reads only its own counters; the city any partner's."""
    if identity.role is Role.PARTNER and identity.subject != partner_id:
        raise PermissionDenied(f"{identity.role_name} may not use the counters of partner {partner_id!r}")


def validate_counter(counter: pb.Counter) -> None:
    if not 1 <= len(counter.display_name.strip()) <= 200:
        raise InvalidArgument("counter.display_name is required (at most 200 characters)")
    if counter.kind not in pb.CountKind.values() or counter.kind == pb.COUNT_KIND_UNSPECIFIED:
        raise InvalidArgument("counter.kind is required: PEOPLE or VEHICLES")
    if not counter.HasField("location"):
        raise InvalidArgument("counter.location is required")
    validate_lat_lng(counter.location.latitude, counter.location.longitude, "counter.location")
    if len(counter.edge_id) > 128:
        raise InvalidArgument("counter.edge_id is longer than 128 characters")
    if counter.edge_id and counter.kind != pb.COUNT_KIND_VEHICLES:
        raise InvalidArgument("counter.edge_id is for vehicle counters (what the road network carries)")
    directions = list(counter.directions)
    if not 1 <= len(directions) <= MAX_DIRECTIONS:
        raise InvalidArgument(f"counter.directions: name 1-{MAX_DIRECTIONS} directions it tells apart")
    for direction in directions:
        if len(direction) > 40 or not DIRECTION.match(direction):
            raise InvalidArgument(f"counter.directions: {direction!r} is not lower-case words joined by hyphens")
    if len(set(directions)) != len(directions):
        raise InvalidArgument("counter.directions: a direction is named twice")


def validate_feed(request: pb.ReportCountsRequest, *, counter: pb.Counter, now: datetime) -> None:
    """A counter feed carries counts and nothing else: directions the counter has, whole intervals up
    to an hour long that have ended, each reported once per call. (Fields beyond the contract never
    get here: the method is `strict`.)"""
    if not 1 <= len(request.counts) <= MAX_COUNTS:
        raise InvalidArgument(f"counts: 1-{MAX_COUNTS} per call")
    directions = set(counter.directions)
    seen: set[tuple[str, datetime]] = set()
    for i, count in enumerate(request.counts):
        where = f"counts[{i}]"
        if count.direction not in directions:
            named = ", ".join(sorted(directions))
            raise InvalidArgument(f"{where}.direction {count.direction[:40]!r} is not one of the counter's: {named}")
        if not (count.HasField("interval_start") and count.HasField("interval_end")):
            raise InvalidArgument(f"{where}: interval_start and interval_end are required")
        start = from_timestamp(count.interval_start, f"{where}.interval_start")
        end = from_timestamp(count.interval_end, f"{where}.interval_end")
        if not timedelta(0) < end - start <= MAX_INTERVAL:
            raise InvalidArgument(f"{where}: the interval must end after it starts, at most an hour later")
        if end > now + CLOCK_SKEW:
            raise InvalidArgument(f"{where}.interval_end is in the future: count intervals that have ended")
        if not 0 <= count.count <= MAX_COUNT:
            raise InvalidArgument(f"{where}.count must be 0-{MAX_COUNT}")
        if (count.direction, start) in seen:
            raise InvalidArgument(f"{where}: this direction's interval is in the call twice")
        seen.add((count.direction, start))


def shaped(counts: Iterable[pb.Count], access: Access) -> list[pb.Count]:
    """The counts as `access` gives them (copies, rounded when agreed)."""
    out = []
    for count in counts:
        shown = pb.Count()
        shown.CopyFrom(count)
        shown.count = rounded(count.count, access)
        out.append(shown)
    return out
