"""UTC time and its protobuf and database representations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, overload

from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import DateTime
from sqlalchemy.types import TypeDecorator

from services.common.errors import InvalidArgument

# Times the services accept: wide enough for any real schedule, far from datetime's limits.
MIN_TIME = datetime(2000, 1, 1, tzinfo=UTC)
MAX_TIME = datetime(2200, 1, 1, tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def to_timestamp(when: datetime) -> Timestamp: ...
@overload
def to_timestamp(when: None) -> None: ...
@overload
def to_timestamp(when: datetime | None) -> Timestamp | None: ...


def to_timestamp(when: datetime | None) -> Timestamp | None:
    if when is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(when)
    return ts


def from_timestamp(ts: Timestamp, field: str = "timestamp") -> datetime:
    """A valid protobuf Timestamp as an aware UTC datetime; out-of-range values are INVALID_ARGUMENT."""
    try:
        when = ts.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidArgument(f"{field} is not a valid time") from None
    if not MIN_TIME <= when <= MAX_TIME:
        raise InvalidArgument(f"{field} {when.isoformat()} is outside {MIN_TIME.year}-{MAX_TIME.year}")
    return when


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
