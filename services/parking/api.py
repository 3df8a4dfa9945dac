"""The gRPC servicer of almere.parking.v1.ParkingService: proto <-> domain, status codes, roles."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Sequence
from datetime import timedelta
from typing import Any

from almere.parking.v1 import parking_pb2 as pb
from almere.parking.v1 import parking_pb2_grpc
from almere.partners.v1 import partners_pb2 as ppb
from grpc import aio
from sqlalchemy import Engine

from contract.bus import OCCUPANCY_CHANGED
from services.common import paging
from services.common.access import ANY_CALLER, OPEN_DATA, allow
from services.common.auth import Role, current_identity
from services.common.clock import from_timestamp, to_timestamp, utcnow
from services.common.db import BatchHandler, GroupCommitter
from services.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from services.common.feed import Change, EventFeed, with_ticks
from services.common.geo import area_of, inside, validate_lat_lng
from services.common.names import validate_id
from services.common.opening_hours import is_open
from services.common.terms import Access, Outcome, require
from services.parking import forecast, logic, usecases
from services.parking.convert import FacilityView, facility_to_proto, occupancy_to_proto, thresholds_of
from services.parking.models import Facility
from services.parking.shaping import count_of, shape
from services.parking.sharing import Holdback, Sharing, View
from services.parking.travel_times import TravelTimes

Context = aio.ServicerContext[Any, Any]
MAX_WATCH_IDS = 1000
MAX_BUCKETS = 10_000
MAX_HISTORY_ROWS = 200_000


def _version_of(change: Change) -> tuple[str, int]:
    return change[1].facility_id, change[1].version


class ParkingApi(parking_pb2_grpc.ParkingServiceServicer):
    def __init__(
        self,
        engine: Engine,
        *,
        committer: GroupCommitter,
        feed: EventFeed,
        travel_times: TravelTimes,
        sharing: Sharing,
        forecasts: forecast.Forecasts,
    ) -> None:
        self._engine = engine
        self._committer = committer
        self._feed = feed
        self._travel_times = travel_times
        self._sharing = sharing
        self._forecasts = forecasts
        # The writes publish partners' occupancy as the bus reader may see it (shaping.for_bus); one
        # handler object each, so the group committer batches their items together.
        bus = sharing.bus_access
        self._create = functools.partial(usecases.create_facilities, bus=bus)
        self._update = functools.partial(usecases.update_facilities, bus=bus)
        self._report = functools.partial(usecases.report_occupancies, bus=bus)
        self._gates = functools.partial(usecases.record_gate_batches, bus=bus)

    async def _audited(self, handler: BatchHandler, item: Any, method: str) -> Any:
        """A write; one refused for writing another operator's facility goes in that partner's audit."""
        try:
            return await self._committer.submit(handler, item)
        except logic.NotItsOwn as refused:
            self._sharing.refused_write(refused, method=method)
            raise

    async def _view(self, rows: Sequence[FacilityView], method: str) -> View:
        return await self._sharing.view(((r.id, r.operator_id) for r in rows), method=method, now=utcnow())

    @staticmethod
    def _shaped(occupancy: pb.Occupancy, row: FacilityView, view: View) -> pb.Occupancy:
        access = view.access(row.operator_id)
        shape(occupancy, access=access, past=view.past.get(row.id), thresholds=thresholds_of(row))
        return occupancy

    async def _facilities(self, rows: Sequence[Facility], method: str, *, single: bool = False) -> list[pb.Facility]:
        """Facilities as the caller may see them: their occupancy shaped by their operators' agreements."""
        view = await self._view(rows, method)
        out = []
        for row in rows:
            if single:
                require(view.access(row.operator_id))
            facility = facility_to_proto(row)
            self._shaped(facility.occupancy, row, view)
            out.append(facility)
        return out

    # --- facilities ------------------------------------------------------------------------------

    @allow(logic.MANAGERS)
    async def CreateFacility(self, request: pb.CreateFacilityRequest, context: Context) -> pb.CreateFacilityResponse:
        identity = current_identity.get()
        facility_id = validate_id(request.facility_id, "facility_id")
        if not request.HasField("facility"):
            raise InvalidArgument("facility is required")
        facility = pb.Facility()
        facility.CopyFrom(request.facility)
        for output_only in ("name", "version", "create_time", "update_time", "occupancy"):
            facility.ClearField(output_only)
        logic.apply_defaults(facility)
        logic.validate_facility(facility)
        item = usecases.CreateFacility(identity=identity, facility_id=facility_id, facility=facility, now=utcnow())
        created = await self._committer.submit(self._create, item)
        return pb.CreateFacilityResponse(facility=created)

    @allow(OPEN_DATA)
    async def GetFacility(self, request: pb.GetFacilityRequest, context: Context) -> pb.GetFacilityResponse:
        facility_id = logic.facility_id_from_name(request.name)
        row = await asyncio.to_thread(usecases.get_facility, self._engine, facility_id)
        facility = (await self._facilities([row], "GetFacility", single=True))[0]
        return pb.GetFacilityResponse(facility=facility)

    @allow(OPEN_DATA)
    async def ListFacilities(self, request: pb.ListFacilitiesRequest, context: Context) -> pb.ListFacilitiesResponse:
        size = paging.page_size(request.page_size)
        if request.operator_id:
            validate_id(request.operator_id, "operator_id")
        query = usecases.FacilityFilter(
            operator_id=request.operator_id,
            kinds=tuple(sorted(set(request.kinds))),
            area=area_of(request.area) if request.HasField("area") else None,
        )
        fingerprint = paging.fingerprint(query)
        after = paging.decode(request.page_token, fingerprint)
        rows = await asyncio.to_thread(usecases.list_facilities, self._engine, f=query, after_id=after, limit=size + 1)
        next_token = paging.encode(rows[size - 1].id, fingerprint) if len(rows) > size else ""
        facilities = await self._facilities(rows[:size], "ListFacilities")
        return pb.ListFacilitiesResponse(facilities=facilities, next_page_token=next_token)

    @allow(logic.WRITERS, notes={Role.OPERATOR: "its own facilities, not who operates them"})
    async def UpdateFacility(self, request: pb.UpdateFacilityRequest, context: Context) -> pb.UpdateFacilityResponse:
        facility_id = logic.facility_id_from_name(request.facility.name, "facility.name")
        paths = tuple(dict.fromkeys(request.update_mask.paths))
        if not paths:
            raise InvalidArgument("update_mask is required: name the fields to change")
        unknown = sorted(set(paths) - usecases.UPDATABLE_FIELDS)
        if unknown:
            raise InvalidArgument(
                f"update_mask names fields that cannot be updated: {', '.join(unknown)} "
                f"(updatable: {', '.join(sorted(usecases.UPDATABLE_FIELDS))})"
            )
        item = usecases.UpdateFacility(
            identity=current_identity.get(),
            facility_id=facility_id,
            patch=request.facility,
            paths=paths,
            now=utcnow(),
        )
        updated: pb.Facility = await self._audited(self._update, item, "UpdateFacility")
        # The answer's occupancy is the operator's data like any read's (an engineer's update).
        view = await self._sharing.view([(facility_id, updated.operator_id)], method="UpdateFacility", now=utcnow())
        shape(
            updated.occupancy,
            access=view.access(updated.operator_id),
            past=view.past.get(facility_id),
            thresholds=logic.thresholds_from(updated.thresholds),
        )
        return pb.UpdateFacilityResponse(facility=updated)

    # --- occupancy -------------------------------------------------------------------------------

    @allow(logic.WRITERS, notes={Role.OPERATOR: "its own facilities"})
    async def ReportOccupancy(self, request: pb.ReportOccupancyRequest, context: Context) -> pb.ReportOccupancyResponse:
        facility_id = logic.facility_id_from_name(request.facility, "facility")
        if not 1 <= request.sequence <= logic.MAX_SEQUENCE:
            raise InvalidArgument(f"sequence is required, from 1 to {logic.MAX_SEQUENCE}")
        if not request.HasField("source_time"):
            raise InvalidArgument("source_time is required: when the count was measured")
        now = utcnow()
        source_time = from_timestamp(request.source_time)
        logic.validate_source_time(source_time, now, "source_time")
        item = usecases.ReportOccupancy(
            identity=current_identity.get(),
            facility_id=facility_id,
            request=request,
            source_time=source_time,
            now=now,
        )
        response: pb.ReportOccupancyResponse = await self._audited(self._report, item, "ReportOccupancy")
        return response

    @allow(logic.WRITERS, notes={Role.OPERATOR: "its own facilities"})
    async def RecordGateEvents(
        self, request_iterator: AsyncIterator[pb.RecordGateEventsRequest], context: Context
    ) -> pb.RecordGateEventsResponse:
        identity = current_identity.get()
        response = pb.RecordGateEventsResponse()
        latest: dict[str, pb.Occupancy] = {}
        async for batch in request_iterator:
            facility_id = logic.facility_id_from_name(batch.facility, f"batch {batch.batch_id!r} facility")
            now = utcnow()
            entries, exits, latest_time = logic.validate_gate_batch(batch, now)
            item = usecases.GateBatchItem(
                identity=identity,
                facility_id=facility_id,
                batch_id=batch.batch_id,
                entries=entries,
                exits=exits,
                latest=latest_time,
                now=now,
            )
            result: usecases.GateBatchResult = await self._audited(self._gates, item, "RecordGateEvents")
            if result.duplicate:
                response.duplicate_batches += 1
                response.duplicate_events += len(batch.events)
            else:
                response.accepted_batches += 1
                response.accepted_events += len(batch.events)
            latest[facility_id] = result.occupancy
        if response.accepted_batches + response.duplicate_batches == 0:
            raise InvalidArgument("the stream carried no batches")
        response.occupancies.extend(latest[k] for k in sorted(latest))
        return response

    @allow(OPEN_DATA)
    async def GetOccupancy(self, request: pb.GetOccupancyRequest, context: Context) -> pb.GetOccupancyResponse:
        facility_id = logic.facility_id_from_name(request.facility, "facility")
        row = await asyncio.to_thread(usecases.get_facility, self._engine, facility_id)
        view = await self._view([row], "GetOccupancy")
        require(view.access(row.operator_id))
        return pb.GetOccupancyResponse(occupancy=self._shaped(occupancy_to_proto(row), row, view))

    @allow(ANY_CALLER)
    async def WatchOccupancy(
        self, request: pb.WatchOccupancyRequest, context: Context
    ) -> AsyncIterator[pb.WatchOccupancyResponse]:
        if len(request.facilities) > MAX_WATCH_IDS:
            raise InvalidArgument(f"at most {MAX_WATCH_IDS} facilities per watch")
        ids = {logic.facility_id_from_name(n, f"facilities[{i}]") for i, n in enumerate(request.facilities)}
        area = area_of(request.area) if request.HasField("area") else None
        read = functools.partial(
            usecases.occupancy_snapshot, self._engine, usecases.FacilityFilter(area=area), ids or None
        )
        async with self._feed.watch_from(read, _version_of) as (snapshot, changes):
            view = await self._view(snapshot.items, "WatchOccupancy")
            for row in snapshot.items:
                occupancy = self._shaped(occupancy_to_proto(row), row, view)
                yield pb.WatchOccupancyResponse(occupancy=occupancy, snapshot=True)
            # Forecasts after every occupancy of the snapshot: a caller's map fills before they come.
            refresh = forecast.Refreshes() if request.include_forecasts else None
            versions = {r.id: r.version for r in snapshot.items}
            if refresh is not None:
                for row in snapshot.items:
                    access = view.access(row.operator_id)
                    made = await self._watched_forecast(row.id, version=row.version, access=access)
                    refresh.sent(row.id)
                    if made is not None:
                        yield pb.WatchOccupancyResponse(forecast=made, snapshot=True)
            matching: set[str] | None = ids or ({r.id for r in snapshot.items} if area else None)
            # Whose each facility is and its thresholds, for shaping its changes under the agreement.
            owners = {r.id: (r.operator_id, thresholds_of(r)) for r in snapshot.items}
            held = Holdback()
            sent: dict[str, int] = {}

            def wait_s() -> float | None:
                waits = [w for w in (held.wait_s(), refresh.wait_s() if refresh else None) if w is not None]
                return min(waits, default=None)

            async for change in with_ticks(changes, wait_s):
                for released in held.released():
                    yield pb.WatchOccupancyResponse(occupancy=released, snapshot=False)
                for facility_id in refresh.due() if refresh is not None else ():
                    access = self._sharing.access(owners[facility_id][0])
                    made = await self._watched_forecast(facility_id, version=versions[facility_id], access=access)
                    refresh.sent(facility_id)  # type: ignore[union-attr]  # due() of None is empty
                    if made is not None:
                        yield pb.WatchOccupancyResponse(forecast=made, snapshot=False)
                if change is None:
                    continue
                name, event = change
                if name != OCCUPANCY_CHANGED:
                    facility = event.facility
                    owners[event.facility_id] = (facility.operator_id, logic.thresholds_from(facility.thresholds))
                    if area and not ids and facility.HasField("location"):
                        if inside(area, facility.location.latitude, facility.location.longitude):
                            matching.add(event.facility_id)  # type: ignore[union-attr]
                        else:
                            matching.discard(event.facility_id)  # type: ignore[union-attr]
                    continue
                if (matching is not None and event.facility_id not in matching) or event.facility_id not in owners:
                    continue
                operator, thresholds = owners[event.facility_id]
                access = self._sharing.access(operator)
                if access.outcome in (Outcome.WITHHELD, Outcome.REFUSED):
                    continue  # the snapshot said so; the facility's changes are not the caller's to see
                occupancy = await self._counted(event)
                if occupancy.version <= sent.get(event.facility_id, 0):
                    continue  # read from the store already, at this version or a later one
                sent[event.facility_id] = versions[event.facility_id] = occupancy.version
                if refresh:
                    refresh.changed(event.facility_id)
                shape(occupancy, access=access, thresholds=thresholds, held=True)
                if access.delay:
                    held.hold(occupancy, delay_s=access.delay.total_seconds())
                else:
                    yield pb.WatchOccupancyResponse(occupancy=occupancy, snapshot=False)

    async def _counted(self, event: Any) -> pb.Occupancy:
        """A change's occupancy as counted: the event's own copy, or, when the bus carries it shaped
        under the operator's agreement, the store's (it may be newer than the event)."""
        if event.occupancy.sharing.outcome in (ppb.ACCESS_OUTCOME_UNSPECIFIED, ppb.ACCESS_OUTCOME_FULL):
            occupancy = pb.Occupancy()
            occupancy.CopyFrom(event.occupancy)  # the event is every watcher's: shape a copy
            occupancy.ClearField("sharing")
            return occupancy
        row = await asyncio.to_thread(usecases.get_facility, self._engine, event.facility_id)
        return occupancy_to_proto(row)

    @allow(ANY_CALLER)
    async def GetOccupancyHistory(
        self, request: pb.GetOccupancyHistoryRequest, context: Context
    ) -> pb.GetOccupancyHistoryResponse:
        facility_id = logic.facility_id_from_name(request.facility, "facility")
        if not request.HasField("start_time"):
            raise InvalidArgument("start_time is required")
        start = from_timestamp(request.start_time)
        end = from_timestamp(request.end_time) if request.HasField("end_time") else utcnow()
        if end <= start:
            raise InvalidArgument("end_time must be after start_time")
        width = request.bucket.ToTimedelta() if request.HasField("bucket") else timedelta(minutes=5)
        if width < timedelta(seconds=1):
            raise InvalidArgument("bucket must be at least 1s")
        if (end - start) / width > MAX_BUCKETS:
            raise InvalidArgument(f"the range holds more than {MAX_BUCKETS} buckets; use wider buckets")
        width = min(width, end - start)  # one bucket, and no date past the calendar's end

        row = await asyncio.to_thread(usecases.get_facility, self._engine, facility_id)
        access = (await self._view([row], "GetOccupancyHistory")).access(row.operator_id)
        require(access)
        if access.detail == ppb.DETAIL_STATUS_ONLY:
            raise PermissionDenied(f"{access.agreement} shares this occupancy as its status only: no history of counts")
        end = min(end, utcnow() - access.delay)  # a delayed audience's history ends a delay ago

        def read_and_bucket() -> tuple[int, list[logic.Bucket]]:
            if end <= start:
                return row.capacity, []
            _, prior, samples = usecases.history(
                self._engine, facility_id=facility_id, start=start, end=end, max_rows=MAX_HISTORY_ROWS
            )
            buckets = logic.bucket_history(prior=prior, samples=samples, start=start, end=end, width=width)
            return row.capacity, [logic.rounded(b, access.round_to) for b in buckets] if access.round_to else buckets

        capacity, buckets = await asyncio.to_thread(read_and_bucket)
        return pb.GetOccupancyHistoryResponse(
            capacity=capacity,
            buckets=[
                pb.OccupancyBucket(
                    start_time=to_timestamp(b.start),
                    min_occupied_spaces=b.min,
                    max_occupied_spaces=b.max,
                    mean_occupied_spaces=b.mean,
                    last_occupied_spaces=b.last,
                    samples=b.samples,
                    known=b.known,
                )
                for b in buckets
            ],
        )

    @allow(ANY_CALLER)
    async def RecommendFacility(
        self, request: pb.RecommendFacilityRequest, context: Context
    ) -> pb.RecommendFacilityResponse:
        if not request.HasField("destination"):
            raise InvalidArgument("destination is required")
        lat, lng = request.destination.latitude, request.destination.longitude
        validate_lat_lng(lat, lng, "destination")
        if not 0 <= request.max_results <= 50:
            raise InvalidArgument("max_results must be between 0 and 50")
        if not 0 <= request.max_walk_meters <= 20_000:
            raise InvalidArgument("max_walk_meters must be between 0 and 20000")
        arrival = from_timestamp(request.arrival_time) if request.HasField("arrival_time") else utcnow()
        kinds = tuple(sorted(set(request.kinds)))
        rows = await asyncio.to_thread(usecases.all_facilities, self._engine, usecases.FacilityFilter(kinds=kinds))
        located = [r for r in rows if r.latitude is not None and r.longitude is not None]
        # Ranked on what the caller may see: a withheld count ranks as unknown, a delayed one as it was.
        shown = {r.id: f for r, f in zip(located, await self._facilities(located, "RecommendFacility"), strict=True)}
        candidates = [
            logic.Candidate(
                facility_id=r.id,
                latitude=shown[r.id].location.latitude,
                longitude=shown[r.id].location.longitude,
                capacity=r.capacity,
                occupied=count_of(shown[r.id].occupancy),
                status=shown[r.id].occupancy.status,
                open_at_arrival=is_open(r.opening_hours, r.time_zone, arrival),
            )
            for r in located
        ]
        drive = None
        if request.origin_edge_id:
            entrances = {r.id: r.entrance_edge_ids[0] for r in rows if r.entrance_edge_ids}
            caller = current_identity.get().caller
            drive = await self._travel_times.drive_seconds(request.origin_edge_id, entrances, caller)
        limit = request.max_results or 5
        ranked = logic.rank(
            candidates, lat=lat, lng=lng, max_walk_m=request.max_walk_meters or 1500.0, limit=limit, drive_s=drive
        )
        return pb.RecommendFacilityResponse(
            recommendations=[
                pb.Recommendation(
                    facility=shown[c.facility_id],
                    walk_meters=walk,
                    score=score,
                    drive_seconds=seconds,
                )
                for c, walk, score, seconds in ranked
            ]
        )

    @allow(ANY_CALLER)
    async def Forecast(self, request: pb.ForecastRequest, context: Context) -> pb.ForecastResponse:
        facility_id = logic.facility_id_from_name(request.facility, "facility")
        now = utcnow()
        events = [
            (from_timestamp(e.start_time) if e.HasField("start_time") else None, list(e.vehicles_per_hour))
            for e in request.planned_events
        ]
        en_route = [from_timestamp(t) for t in request.en_route_arrival_times]
        forecast.validate_inputs(events=events, en_route=en_route, now=now)
        # Readable as its history is: refused when withheld or status only, made a delay ago, rounded.
        row = await asyncio.to_thread(usecases.get_facility, self._engine, facility_id)
        access = (await self._view([row], "Forecast")).access(row.operator_id)
        require(access)
        if (why := forecast.refusal(access)) is not None:
            raise PermissionDenied(why)
        made = await asyncio.to_thread(
            self._forecasts.make,
            facility_id,
            now=now,
            delay=access.delay,
            events=[(start, rates) for start, rates in events if start is not None],
            en_route=en_route,
        )
        return pb.ForecastResponse(
            capacity=made.capacity,
            forecast_time=to_timestamp(made.forecast_time),
            forecasts=forecast.to_proto(made, round_to=access.round_to),
        )

    async def _watched_forecast(self, facility_id: str, *, version: int, access: Access) -> pb.FacilityForecast | None:
        """A facility's forecasts for a Watch, as Forecast would answer the caller: None when it may
        not read them or the facility has too little history (not an error in a stream)."""
        if forecast.refusal(access) is not None:
            return None
        try:
            made = await asyncio.to_thread(self._forecasts.make, facility_id, now=utcnow(), delay=access.delay)
        except FailedPrecondition:
            return None
        return forecast.facility_forecast(made, facility_id=facility_id, version=version, round_to=access.round_to)
