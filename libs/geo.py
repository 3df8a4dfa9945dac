"""Distances on the WGS84 ellipsoid's sphere, and the walking estimate the KPIs and the optimizer
share."""

from __future__ import annotations

import math

EARTH_RADIUS_M = 6_371_008.8


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
