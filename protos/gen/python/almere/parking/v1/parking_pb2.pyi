import datetime

from almere.type.v1 import geo_pb2 as _geo_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FacilityKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FACILITY_KIND_UNSPECIFIED: _ClassVar[FacilityKind]
    FACILITY_KIND_GARAGE: _ClassVar[FacilityKind]
    FACILITY_KIND_PARK_AND_RIDE: _ClassVar[FacilityKind]
    FACILITY_KIND_ON_STREET_ZONE: _ClassVar[FacilityKind]
    FACILITY_KIND_EVENT_PARKING: _ClassVar[FacilityKind]
    FACILITY_KIND_SURFACE_LOT: _ClassVar[FacilityKind]

class FacilityState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FACILITY_STATE_UNSPECIFIED: _ClassVar[FacilityState]
    FACILITY_STATE_OPEN: _ClassVar[FacilityState]
    FACILITY_STATE_CLOSED: _ClassVar[FacilityState]

class OccupancyStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OCCUPANCY_STATUS_UNSPECIFIED: _ClassVar[OccupancyStatus]
    OCCUPANCY_STATUS_UNKNOWN: _ClassVar[OccupancyStatus]
    OCCUPANCY_STATUS_SPACES_AVAILABLE: _ClassVar[OccupancyStatus]
    OCCUPANCY_STATUS_ALMOST_FULL: _ClassVar[OccupancyStatus]
    OCCUPANCY_STATUS_FULL: _ClassVar[OccupancyStatus]
    OCCUPANCY_STATUS_CLOSED: _ClassVar[OccupancyStatus]

class ReportOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPORT_OUTCOME_UNSPECIFIED: _ClassVar[ReportOutcome]
    REPORT_OUTCOME_ACCEPTED: _ClassVar[ReportOutcome]
    REPORT_OUTCOME_DUPLICATE: _ClassVar[ReportOutcome]
    REPORT_OUTCOME_STALE: _ClassVar[ReportOutcome]

class GateDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GATE_DIRECTION_UNSPECIFIED: _ClassVar[GateDirection]
    GATE_DIRECTION_ENTRY: _ClassVar[GateDirection]
    GATE_DIRECTION_EXIT: _ClassVar[GateDirection]
FACILITY_KIND_UNSPECIFIED: FacilityKind
FACILITY_KIND_GARAGE: FacilityKind
FACILITY_KIND_PARK_AND_RIDE: FacilityKind
FACILITY_KIND_ON_STREET_ZONE: FacilityKind
FACILITY_KIND_EVENT_PARKING: FacilityKind
FACILITY_KIND_SURFACE_LOT: FacilityKind
FACILITY_STATE_UNSPECIFIED: FacilityState
FACILITY_STATE_OPEN: FacilityState
FACILITY_STATE_CLOSED: FacilityState
OCCUPANCY_STATUS_UNSPECIFIED: OccupancyStatus
OCCUPANCY_STATUS_UNKNOWN: OccupancyStatus
OCCUPANCY_STATUS_SPACES_AVAILABLE: OccupancyStatus
OCCUPANCY_STATUS_ALMOST_FULL: OccupancyStatus
OCCUPANCY_STATUS_FULL: OccupancyStatus
OCCUPANCY_STATUS_CLOSED: OccupancyStatus
REPORT_OUTCOME_UNSPECIFIED: ReportOutcome
REPORT_OUTCOME_ACCEPTED: ReportOutcome
REPORT_OUTCOME_DUPLICATE: ReportOutcome
REPORT_OUTCOME_STALE: ReportOutcome
GATE_DIRECTION_UNSPECIFIED: GateDirection
GATE_DIRECTION_ENTRY: GateDirection
GATE_DIRECTION_EXIT: GateDirection

class OpeningWindow(_message.Message):
    __slots__ = ("day_of_week", "opens", "closes")
    DAY_OF_WEEK_FIELD_NUMBER: _ClassVar[int]
    OPENS_FIELD_NUMBER: _ClassVar[int]
    CLOSES_FIELD_NUMBER: _ClassVar[int]
    day_of_week: int
    opens: str
    closes: str
    def __init__(self, day_of_week: _Optional[int] = ..., opens: _Optional[str] = ..., closes: _Optional[str] = ...) -> None: ...

class StatusThresholds(_message.Message):
    __slots__ = ("almost_full", "full", "hysteresis")
    ALMOST_FULL_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    HYSTERESIS_FIELD_NUMBER: _ClassVar[int]
    almost_full: float
    full: float
    hysteresis: float
    def __init__(self, almost_full: _Optional[float] = ..., full: _Optional[float] = ..., hysteresis: _Optional[float] = ...) -> None: ...

class Facility(_message.Message):
    __slots__ = ("name", "display_name", "kind", "operator_id", "capacity", "location", "entrance_edge_ids", "sumo_parking_area_id", "opening_hours", "time_zone", "state", "thresholds", "version", "create_time", "update_time", "occupancy")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    ENTRANCE_EDGE_IDS_FIELD_NUMBER: _ClassVar[int]
    SUMO_PARKING_AREA_ID_FIELD_NUMBER: _ClassVar[int]
    OPENING_HOURS_FIELD_NUMBER: _ClassVar[int]
    TIME_ZONE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLDS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    OCCUPANCY_FIELD_NUMBER: _ClassVar[int]
    name: str
    display_name: str
    kind: FacilityKind
    operator_id: str
    capacity: int
    location: _geo_pb2.LatLng
    entrance_edge_ids: _containers.RepeatedScalarFieldContainer[str]
    sumo_parking_area_id: str
    opening_hours: _containers.RepeatedCompositeFieldContainer[OpeningWindow]
    time_zone: str
    state: FacilityState
    thresholds: StatusThresholds
    version: int
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    occupancy: Occupancy
    def __init__(self, name: _Optional[str] = ..., display_name: _Optional[str] = ..., kind: _Optional[_Union[FacilityKind, str]] = ..., operator_id: _Optional[str] = ..., capacity: _Optional[int] = ..., location: _Optional[_Union[_geo_pb2.LatLng, _Mapping]] = ..., entrance_edge_ids: _Optional[_Iterable[str]] = ..., sumo_parking_area_id: _Optional[str] = ..., opening_hours: _Optional[_Iterable[_Union[OpeningWindow, _Mapping]]] = ..., time_zone: _Optional[str] = ..., state: _Optional[_Union[FacilityState, str]] = ..., thresholds: _Optional[_Union[StatusThresholds, _Mapping]] = ..., version: _Optional[int] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., occupancy: _Optional[_Union[Occupancy, _Mapping]] = ...) -> None: ...

class Occupancy(_message.Message):
    __slots__ = ("facility", "occupied_spaces", "free_spaces", "capacity", "occupancy_ratio", "status", "sequence", "source_time", "update_time", "version")
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    OCCUPIED_SPACES_FIELD_NUMBER: _ClassVar[int]
    FREE_SPACES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    OCCUPANCY_RATIO_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    facility: str
    occupied_spaces: int
    free_spaces: int
    capacity: int
    occupancy_ratio: float
    status: OccupancyStatus
    sequence: int
    source_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    version: int
    def __init__(self, facility: _Optional[str] = ..., occupied_spaces: _Optional[int] = ..., free_spaces: _Optional[int] = ..., capacity: _Optional[int] = ..., occupancy_ratio: _Optional[float] = ..., status: _Optional[_Union[OccupancyStatus, str]] = ..., sequence: _Optional[int] = ..., source_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class CreateFacilityRequest(_message.Message):
    __slots__ = ("facility_id", "facility")
    FACILITY_ID_FIELD_NUMBER: _ClassVar[int]
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    facility_id: str
    facility: Facility
    def __init__(self, facility_id: _Optional[str] = ..., facility: _Optional[_Union[Facility, _Mapping]] = ...) -> None: ...

class CreateFacilityResponse(_message.Message):
    __slots__ = ("facility",)
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    facility: Facility
    def __init__(self, facility: _Optional[_Union[Facility, _Mapping]] = ...) -> None: ...

class GetFacilityRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetFacilityResponse(_message.Message):
    __slots__ = ("facility",)
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    facility: Facility
    def __init__(self, facility: _Optional[_Union[Facility, _Mapping]] = ...) -> None: ...

class ListFacilitiesRequest(_message.Message):
    __slots__ = ("page_size", "page_token", "operator_id", "kinds", "area")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    OPERATOR_ID_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    AREA_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    operator_id: str
    kinds: _containers.RepeatedScalarFieldContainer[FacilityKind]
    area: _geo_pb2.BoundingBox
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., operator_id: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[FacilityKind, str]]] = ..., area: _Optional[_Union[_geo_pb2.BoundingBox, _Mapping]] = ...) -> None: ...

class ListFacilitiesResponse(_message.Message):
    __slots__ = ("facilities", "next_page_token")
    FACILITIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    facilities: _containers.RepeatedCompositeFieldContainer[Facility]
    next_page_token: str
    def __init__(self, facilities: _Optional[_Iterable[_Union[Facility, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateFacilityRequest(_message.Message):
    __slots__ = ("facility", "update_mask")
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    facility: Facility
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, facility: _Optional[_Union[Facility, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateFacilityResponse(_message.Message):
    __slots__ = ("facility",)
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    facility: Facility
    def __init__(self, facility: _Optional[_Union[Facility, _Mapping]] = ...) -> None: ...

class ReportOccupancyRequest(_message.Message):
    __slots__ = ("facility", "occupied_spaces", "free_spaces", "source_time", "sequence")
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    OCCUPIED_SPACES_FIELD_NUMBER: _ClassVar[int]
    FREE_SPACES_FIELD_NUMBER: _ClassVar[int]
    SOURCE_TIME_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    facility: str
    occupied_spaces: int
    free_spaces: int
    source_time: _timestamp_pb2.Timestamp
    sequence: int
    def __init__(self, facility: _Optional[str] = ..., occupied_spaces: _Optional[int] = ..., free_spaces: _Optional[int] = ..., source_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., sequence: _Optional[int] = ...) -> None: ...

class ReportOccupancyResponse(_message.Message):
    __slots__ = ("outcome", "occupancy", "detail")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    OCCUPANCY_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    outcome: ReportOutcome
    occupancy: Occupancy
    detail: str
    def __init__(self, outcome: _Optional[_Union[ReportOutcome, str]] = ..., occupancy: _Optional[_Union[Occupancy, _Mapping]] = ..., detail: _Optional[str] = ...) -> None: ...

class GateEvent(_message.Message):
    __slots__ = ("direction", "event_time", "gate_id")
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    GATE_ID_FIELD_NUMBER: _ClassVar[int]
    direction: GateDirection
    event_time: _timestamp_pb2.Timestamp
    gate_id: str
    def __init__(self, direction: _Optional[_Union[GateDirection, str]] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., gate_id: _Optional[str] = ...) -> None: ...

class RecordGateEventsRequest(_message.Message):
    __slots__ = ("facility", "batch_id", "events")
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    facility: str
    batch_id: str
    events: _containers.RepeatedCompositeFieldContainer[GateEvent]
    def __init__(self, facility: _Optional[str] = ..., batch_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[GateEvent, _Mapping]]] = ...) -> None: ...

class RecordGateEventsResponse(_message.Message):
    __slots__ = ("accepted_events", "duplicate_events", "accepted_batches", "duplicate_batches", "occupancies")
    ACCEPTED_EVENTS_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_EVENTS_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_BATCHES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_BATCHES_FIELD_NUMBER: _ClassVar[int]
    OCCUPANCIES_FIELD_NUMBER: _ClassVar[int]
    accepted_events: int
    duplicate_events: int
    accepted_batches: int
    duplicate_batches: int
    occupancies: _containers.RepeatedCompositeFieldContainer[Occupancy]
    def __init__(self, accepted_events: _Optional[int] = ..., duplicate_events: _Optional[int] = ..., accepted_batches: _Optional[int] = ..., duplicate_batches: _Optional[int] = ..., occupancies: _Optional[_Iterable[_Union[Occupancy, _Mapping]]] = ...) -> None: ...

class GetOccupancyRequest(_message.Message):
    __slots__ = ("facility",)
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    facility: str
    def __init__(self, facility: _Optional[str] = ...) -> None: ...

class GetOccupancyResponse(_message.Message):
    __slots__ = ("occupancy",)
    OCCUPANCY_FIELD_NUMBER: _ClassVar[int]
    occupancy: Occupancy
    def __init__(self, occupancy: _Optional[_Union[Occupancy, _Mapping]] = ...) -> None: ...

class WatchOccupancyRequest(_message.Message):
    __slots__ = ("facilities", "area")
    FACILITIES_FIELD_NUMBER: _ClassVar[int]
    AREA_FIELD_NUMBER: _ClassVar[int]
    facilities: _containers.RepeatedScalarFieldContainer[str]
    area: _geo_pb2.BoundingBox
    def __init__(self, facilities: _Optional[_Iterable[str]] = ..., area: _Optional[_Union[_geo_pb2.BoundingBox, _Mapping]] = ...) -> None: ...

class WatchOccupancyResponse(_message.Message):
    __slots__ = ("occupancy", "snapshot")
    OCCUPANCY_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    occupancy: Occupancy
    snapshot: bool
    def __init__(self, occupancy: _Optional[_Union[Occupancy, _Mapping]] = ..., snapshot: _Optional[bool] = ...) -> None: ...

class GetOccupancyHistoryRequest(_message.Message):
    __slots__ = ("facility", "start_time", "end_time", "bucket")
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    facility: str
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    bucket: _duration_pb2.Duration
    def __init__(self, facility: _Optional[str] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., bucket: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class OccupancyBucket(_message.Message):
    __slots__ = ("start_time", "min_occupied_spaces", "max_occupied_spaces", "mean_occupied_spaces", "last_occupied_spaces", "samples", "known")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    MIN_OCCUPIED_SPACES_FIELD_NUMBER: _ClassVar[int]
    MAX_OCCUPIED_SPACES_FIELD_NUMBER: _ClassVar[int]
    MEAN_OCCUPIED_SPACES_FIELD_NUMBER: _ClassVar[int]
    LAST_OCCUPIED_SPACES_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    KNOWN_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    min_occupied_spaces: int
    max_occupied_spaces: int
    mean_occupied_spaces: float
    last_occupied_spaces: int
    samples: int
    known: bool
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., min_occupied_spaces: _Optional[int] = ..., max_occupied_spaces: _Optional[int] = ..., mean_occupied_spaces: _Optional[float] = ..., last_occupied_spaces: _Optional[int] = ..., samples: _Optional[int] = ..., known: _Optional[bool] = ...) -> None: ...

class GetOccupancyHistoryResponse(_message.Message):
    __slots__ = ("buckets", "capacity")
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    buckets: _containers.RepeatedCompositeFieldContainer[OccupancyBucket]
    capacity: int
    def __init__(self, buckets: _Optional[_Iterable[_Union[OccupancyBucket, _Mapping]]] = ..., capacity: _Optional[int] = ...) -> None: ...

class RecommendFacilityRequest(_message.Message):
    __slots__ = ("destination", "arrival_time", "kinds", "max_results", "max_walk_meters")
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    ARRIVAL_TIME_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    MAX_RESULTS_FIELD_NUMBER: _ClassVar[int]
    MAX_WALK_METERS_FIELD_NUMBER: _ClassVar[int]
    destination: _geo_pb2.LatLng
    arrival_time: _timestamp_pb2.Timestamp
    kinds: _containers.RepeatedScalarFieldContainer[FacilityKind]
    max_results: int
    max_walk_meters: float
    def __init__(self, destination: _Optional[_Union[_geo_pb2.LatLng, _Mapping]] = ..., arrival_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kinds: _Optional[_Iterable[_Union[FacilityKind, str]]] = ..., max_results: _Optional[int] = ..., max_walk_meters: _Optional[float] = ...) -> None: ...

class Recommendation(_message.Message):
    __slots__ = ("facility", "walk_meters", "score")
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    WALK_METERS_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    facility: Facility
    walk_meters: float
    score: float
    def __init__(self, facility: _Optional[_Union[Facility, _Mapping]] = ..., walk_meters: _Optional[float] = ..., score: _Optional[float] = ...) -> None: ...

class RecommendFacilityResponse(_message.Message):
    __slots__ = ("recommendations",)
    RECOMMENDATIONS_FIELD_NUMBER: _ClassVar[int]
    recommendations: _containers.RepeatedCompositeFieldContainer[Recommendation]
    def __init__(self, recommendations: _Optional[_Iterable[_Union[Recommendation, _Mapping]]] = ...) -> None: ...
