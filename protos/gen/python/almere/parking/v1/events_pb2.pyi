import datetime

from almere.parking.v1 import parking_pb2 as _parking_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OccupancyChangeCause(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OCCUPANCY_CHANGE_CAUSE_UNSPECIFIED: _ClassVar[OccupancyChangeCause]
    OCCUPANCY_CHANGE_CAUSE_COUNT_REPORT: _ClassVar[OccupancyChangeCause]
    OCCUPANCY_CHANGE_CAUSE_GATE_EVENTS: _ClassVar[OccupancyChangeCause]
    OCCUPANCY_CHANGE_CAUSE_FACILITY_UPDATE: _ClassVar[OccupancyChangeCause]
OCCUPANCY_CHANGE_CAUSE_UNSPECIFIED: OccupancyChangeCause
OCCUPANCY_CHANGE_CAUSE_COUNT_REPORT: OccupancyChangeCause
OCCUPANCY_CHANGE_CAUSE_GATE_EVENTS: OccupancyChangeCause
OCCUPANCY_CHANGE_CAUSE_FACILITY_UPDATE: OccupancyChangeCause

class FacilityChangedEvent(_message.Message):
    __slots__ = ("facility_id", "version", "occur_time", "facility", "changed_fields")
    FACILITY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OCCUR_TIME_FIELD_NUMBER: _ClassVar[int]
    FACILITY_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    facility_id: str
    version: int
    occur_time: _timestamp_pb2.Timestamp
    facility: _parking_pb2.Facility
    changed_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, facility_id: _Optional[str] = ..., version: _Optional[int] = ..., occur_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., facility: _Optional[_Union[_parking_pb2.Facility, _Mapping]] = ..., changed_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class OccupancyChangedEvent(_message.Message):
    __slots__ = ("facility_id", "version", "occur_time", "occupancy", "previous_status", "cause")
    FACILITY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OCCUR_TIME_FIELD_NUMBER: _ClassVar[int]
    OCCUPANCY_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATUS_FIELD_NUMBER: _ClassVar[int]
    CAUSE_FIELD_NUMBER: _ClassVar[int]
    facility_id: str
    version: int
    occur_time: _timestamp_pb2.Timestamp
    occupancy: _parking_pb2.Occupancy
    previous_status: _parking_pb2.OccupancyStatus
    cause: OccupancyChangeCause
    def __init__(self, facility_id: _Optional[str] = ..., version: _Optional[int] = ..., occur_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., occupancy: _Optional[_Union[_parking_pb2.Occupancy, _Mapping]] = ..., previous_status: _Optional[_Union[_parking_pb2.OccupancyStatus, str]] = ..., cause: _Optional[_Union[OccupancyChangeCause, str]] = ...) -> None: ...

class StatusChangedEvent(_message.Message):
    __slots__ = ("facility_id", "version", "occur_time", "previous_status", "status", "occupancy")
    FACILITY_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    OCCUR_TIME_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_STATUS_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    OCCUPANCY_FIELD_NUMBER: _ClassVar[int]
    facility_id: str
    version: int
    occur_time: _timestamp_pb2.Timestamp
    previous_status: _parking_pb2.OccupancyStatus
    status: _parking_pb2.OccupancyStatus
    occupancy: _parking_pb2.Occupancy
    def __init__(self, facility_id: _Optional[str] = ..., version: _Optional[int] = ..., occur_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., previous_status: _Optional[_Union[_parking_pb2.OccupancyStatus, str]] = ..., status: _Optional[_Union[_parking_pb2.OccupancyStatus, str]] = ..., occupancy: _Optional[_Union[_parking_pb2.Occupancy, _Mapping]] = ...) -> None: ...
