"""The counter service's events: each count kept, as a detector measurement on stream COUNTS (see
contract.bus), shaped at the publisher to what the stream's reader (the optimizer) may see."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from almere.counters.v1 import counters_pb2 as pb
from almere.detectors.v1 import detectors_pb2

from contract.bus import COUNTED, COUNTS
from services.common.outbox import outbox_row
from services.common.terms import Access, Outcome, rounded


def counted(*, counter: pb.Counter, count: pb.Count, access: Access, now: datetime) -> dict[str, Any] | None:
    """The outbox row of one count kept; None when the agreement gives the bus reader nothing live
    (withheld, refused, or only a delay ago: a late count is not published late)."""
    if access.outcome in (Outcome.WITHHELD, Outcome.REFUSED) or access.delay:
        return None
    value = rounded(count.count, access)
    vehicles = counter.kind == pb.COUNT_KIND_VEHICLES
    message = detectors_pb2.Measurement(
        detector_id=f"{counter.name}/{count.direction}",
        edge_id=counter.edge_id,
        interval_start=count.interval_start,
        interval_end=count.interval_end,
        vehicle_count=value if vehicles else 0,
        person_count=0 if vehicles else value,
        mean_speed_mps=-1.0,  # counters count, they do not time
        counter=counter.name,
        direction=count.direction,
    )
    partner, _, counter_id = counter.name.removeprefix("partners/").partition("/counters/")
    subject = COUNTS.subject(COUNTED, f"{partner}_{counter_id}_{count.direction}")
    return outbox_row(subject=subject, event_type=COUNTED, message=message, now=now)
