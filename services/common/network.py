"""The road network as SUMO sees it (a .net.xml read with sumolib): edge and lane lookups, and
snapping WGS84 points to the nearest drivable lane."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import sumolib
from sumolib.geomhelper import polygonOffsetAndDistanceToPoint, positionAtShapeOffset

from services.common.errors import InvalidArgument

# Roads an incident can be snapped to: those passenger cars may use.
DRIVABLE_CLASS = "passenger"


@dataclass(frozen=True, kw_only=True)
class Snap:
    edge_id: str
    lane_index: int
    position_m: float
    distance_m: float


class RoadNetwork:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._net = sumolib.net.readNet(str(path), withInternal=False)
        if self._net.getLocationOffset() is None or not self._net.hasGeoProj():
            raise ValueError(f"{path} has no geo-reference: build it with a projection (netconvert --proj.utm)")

    def lane_count(self, edge_id: str) -> int:
        return int(self._edge(edge_id).getLaneNumber())

    def edge_length(self, edge_id: str) -> float:
        return float(self._edge(edge_id).getLength())

    def _edge(self, edge_id: str) -> sumolib.net.edge.Edge:
        if not self._net.hasEdge(edge_id):
            raise InvalidArgument(f"edge {edge_id!r} is not in the road network {self.path.name}")
        return self._net.getEdge(edge_id)

    def lat_lng_at(self, edge_id: str, position_m: float) -> tuple[float, float]:
        shape = self._edge(edge_id).getLane(0).getShape()
        x, y = positionAtShapeOffset(shape, position_m)
        lng, lat = self._net.convertXY2LonLat(x, y)
        return lat, lng

    def snap(self, lat: float, lng: float, radius_m: float = 100.0) -> Snap:
        """The drivable lane nearest to a WGS84 point, or INVALID_ARGUMENT if none is within radius."""
        x, y = self._net.convertLonLat2XY(lng, lat)
        best: Snap | None = None
        for edge, _ in self._net.getNeighboringEdges(x, y, radius_m):
            for lane in edge.getLanes():
                if not lane.allows(DRIVABLE_CLASS):
                    continue
                offset, distance = polygonOffsetAndDistanceToPoint((x, y), lane.getShape())
                if best is None or distance < best.distance_m:
                    best = Snap(
                        edge_id=edge.getID(),
                        lane_index=lane.getIndex(),
                        position_m=float(offset),
                        distance_m=float(distance),
                    )
        if best is None or not math.isfinite(best.distance_m) or best.distance_m > radius_m:
            raise InvalidArgument(f"no drivable road within {radius_m:.0f} m of {lat:.6f}, {lng:.6f}")
        return best


@cache
def load_network(path: Path) -> RoadNetwork:
    return RoadNetwork(path)
