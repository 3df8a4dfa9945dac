"""How an occupancy is shaped to what an agreement gives a reader: counts rounded, status only, as it
was a delay ago, or withheld. Pure: no bus, no database (sharing.py computes the accesses)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from almere.parking.v1 import parking_pb2 as pb
from almere.partners.v1 import partners_pb2 as ppb

from services.common.clock import to_timestamp
from services.common.terms import Access, Outcome, rounded, sharing_of
from services.parking import logic

# The PARKING stream's reader's access to an operator's occupancy (Sharing.bus_access): the events
# are shaped at the publisher; the parking service's own watches read the counts from the store.
BusAccess = Callable[[str], Access]


def shape(
    occupancy: pb.Occupancy,
    *,
    access: Access,
    thresholds: logic.Thresholds,
    past: tuple[int, datetime] | None = None,
    held: bool = False,
) -> None:
    """Turn `occupancy` (as counted now, or `held` back for the delay already) into what `access`
    allows, in place; a delayed one becomes `past`, the count in force a delay ago."""
    if not access.agreement:
        return
    capacity = occupancy.capacity
    sharing = sharing_of(access)
    if access.outcome in (Outcome.REFUSED, Outcome.WITHHELD):
        _withhold(occupancy, access)
        return
    if access.delay and not held:
        _as_of(occupancy, past=past, thresholds=thresholds)
    if access.detail == ppb.DETAIL_ROUNDED and occupancy.status != pb.OCCUPANCY_STATUS_UNKNOWN:
        occupied = rounded(occupancy.occupied_spaces, access)
        occupancy.occupied_spaces = occupied
        occupancy.free_spaces = max(0, capacity - occupied)
        occupancy.occupancy_ratio = occupied / capacity
    elif access.detail == ppb.DETAIL_STATUS_ONLY:
        for counted in ("occupied_spaces", "free_spaces", "occupancy_ratio", "sequence", "version"):
            occupancy.ClearField(counted)
        sharing.counts_withheld = True
    occupancy.sharing.CopyFrom(sharing)


def _as_of(occupancy: pb.Occupancy, *, past: tuple[int, datetime] | None, thresholds: logic.Thresholds) -> None:
    """The occupancy as it was `delay` ago: the count then in force and its status (UNKNOWN before the
    first count; the hysteresis of the moment is not replayed)."""
    capacity = occupancy.capacity
    keep = (occupancy.facility, occupancy.status == pb.OCCUPANCY_STATUS_CLOSED)
    occupancy.Clear()
    occupancy.facility, occupancy.capacity = keep[0], capacity
    if past is None:
        occupancy.status = pb.OCCUPANCY_STATUS_CLOSED if keep[1] else pb.OCCUPANCY_STATUS_UNKNOWN
        return
    occupied, measured = past
    occupancy.occupied_spaces = occupied
    occupancy.free_spaces = max(0, capacity - occupied)
    occupancy.occupancy_ratio = occupied / capacity
    occupancy.source_time.CopyFrom(to_timestamp(measured))
    occupancy.status = logic.derive_status(  # type: ignore[assignment]
        previous=pb.OCCUPANCY_STATUS_UNKNOWN,
        occupied=occupied,
        capacity=capacity,
        thresholds=thresholds,
        closed=keep[1],
    )


def count_of(occupancy: pb.Occupancy) -> int | None:
    """The count a shaped occupancy still shows; None when withheld, status only or unknown."""
    if occupancy.sharing.counts_withheld or occupancy.status == pb.OCCUPANCY_STATUS_UNKNOWN:
        return None
    return occupancy.occupied_spaces


def for_bus(occupancy: pb.Occupancy, *, access: Access, thresholds: logic.Thresholds) -> pb.Occupancy:
    """The occupancy as the PARKING stream carries it: as the bus reader's `access` allows, with the
    model live, so a delayed audience gets no count at all (a copy; `occupancy` as it was when no
    agreement applies)."""
    if not access.agreement:
        return occupancy
    published = pb.Occupancy()
    published.CopyFrom(occupancy)
    if access.delay:
        _withhold(published, access)
    else:
        shape(published, access=access, thresholds=thresholds, held=True)
    return published


def _withhold(occupancy: pb.Occupancy, access: Access) -> None:
    """Nothing of the occupancy but its facility and capacity, marked with why (in place)."""
    sharing = sharing_of(access)
    sharing.counts_withheld = True
    occupancy.CopyFrom(
        pb.Occupancy(
            facility=occupancy.facility,
            capacity=occupancy.capacity,
            status=pb.OCCUPANCY_STATUS_UNKNOWN,
            sharing=sharing,
        )
    )
