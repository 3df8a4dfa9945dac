"""WGS84 on the services' side: validating coordinates and areas from requests (distances are in
libs.geo)."""

from __future__ import annotations

import math

from almere.type.v1 import geo_pb2

from services.common.errors import InvalidArgument

# (south, west, north, east) in degrees
Area = tuple[float, float, float, float]


def validate_lat_lng(lat: float, lng: float, field: str) -> None:
    if not (math.isfinite(lat) and math.isfinite(lng) and -90 <= lat <= 90 and -180 <= lng <= 180):
        raise InvalidArgument(f"{field} must have latitude in [-90, 90] and longitude in [-180, 180]")


def area_of(box: geo_pb2.BoundingBox, field: str = "area") -> Area:
    validate_lat_lng(box.low.latitude, box.low.longitude, f"{field}.low")
    validate_lat_lng(box.high.latitude, box.high.longitude, f"{field}.high")
    if box.low.latitude > box.high.latitude or box.low.longitude > box.high.longitude:
        raise InvalidArgument(f"{field}.low must be south-west of {field}.high")
    return box.low.latitude, box.low.longitude, box.high.latitude, box.high.longitude


def inside(area: Area, lat: float, lng: float) -> bool:
    return area[0] <= lat <= area[2] and area[1] <= lng <= area[3]
