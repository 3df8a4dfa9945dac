"""create_tables brings a table an older release created up to date with the columns added since."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import inspect, text

from services.common.db import create_tables, make_engine
from services.parking.models import Facility


def test_added_nullable_columns_appear_in_an_older_table(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    with engine.begin() as connection:  # the facility table as a release before count_time wrote it
        connection.execute(text("CREATE TABLE parking_facility (id VARCHAR(63) PRIMARY KEY, capacity INTEGER)"))
        connection.execute(text("INSERT INTO parking_facility (id, capacity) VALUES ('garage-a', 10)"))
    create_tables(engine, [Facility])
    create_tables(engine, [Facility])  # idempotent
    columns = {c["name"] for c in inspect(engine).get_columns("parking_facility")}
    assert {"count_time", "stale_after_s", "occupancy_time"} <= columns
    with engine.connect() as connection:
        row = connection.execute(text("SELECT id, capacity, stale_after_s FROM parking_facility")).one()
    assert tuple(row) == ("garage-a", 10, None)  # rows kept, new columns empty
    engine.dispose()


def test_sequences_widened_to_64_bit_hold_epoch_milliseconds(database_url: str) -> None:
    """A facility table made when `sequence` was a 32-bit integer takes an epoch-ms sequence after
    create_tables (PostgreSQL: ALTER ... TYPE BIGINT; SQLite's INTEGER is 64-bit already)."""
    engine = make_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE parking_facility (id VARCHAR(63) PRIMARY KEY, sequence INTEGER)"))
    create_tables(engine, [Facility])
    epoch_ms = 1_796_532_007_123
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO parking_facility (id, sequence) VALUES ('garage-a', :s)"), {"s": epoch_ms})
        stored = connection.execute(text("SELECT sequence FROM parking_facility")).scalar_one()
    assert stored == epoch_ms
    engine.dispose()
