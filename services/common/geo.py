"""WGS84 helpers shared by the services: validation, areas, distances."""

from __future__ import annotations

import math

from almere.type.v1 import geo_pb2

from services.common.errors import InvalidArgument

EARTH_RADIUS_M = 6_371_008.8

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


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


WALK_SPEED_MPS = 1.3
WALK_DETOUR = 1.2  # streets are not straight lines


def walking_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Walking distance between two points, from the straight line (the KPIs and the optimizer's
    parking guidance use the same estimate, so guidance minimises what is measured)."""
    return WALK_DETOUR * haversine_m(lat1, lon1, lat2, lon2)
