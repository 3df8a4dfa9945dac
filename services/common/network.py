"""The road network as SUMO sees it (a .net.xml read with sumolib): edge and lane lookups, and
snapping WGS84 points to the nearest drivable lane."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

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

    def geojson(self) -> dict[str, Any]:
        """The network in WGS84 for maps: every drivable lane as a LineString (id `<edge>_<index>`,
        as SUMO names lanes), and every traffic light as a Point at the middle of the junctions it
        controls (its id is the signal service's intersection id)."""
        features: list[dict[str, Any]] = []
        for edge in self._net.getEdges():
            for lane in edge.getLanes():
                if lane.allows(DRIVABLE_CLASS):
                    features.append(self._feature("LineString", self._lon_lat(lane.getShape()), {
                        "kind": "lane", "id": lane.getID(), "edge": edge.getID(), "index": lane.getIndex(),
                        "speed": lane.getSpeed(),
                    }))  # fmt: skip
        for light in self._net.getTrafficLights():
            nodes = {c[0].getEdge().getToNode() for c in light.getConnections()}
            if not nodes:
                continue
            x = sum(n.getCoord()[0] for n in nodes) / len(nodes)
            y = sum(n.getCoord()[1] for n in nodes) / len(nodes)
            junctions = ",".join(sorted(n.getID() for n in nodes))
            properties = {"kind": "light", "id": light.getID(), "junction": junctions}
            features.append(self._feature("Point", self._lon_lat([(x, y)])[0], properties))
        return {"type": "FeatureCollection", "features": features}

    def _lon_lat(self, shape: list[tuple[float, float]]) -> list[list[float]]:
        return [[round(c, 7) for c in self._net.convertXY2LonLat(x, y)] for x, y in shape]

    @staticmethod
    def _feature(kind: str, coordinates: Any, properties: dict[str, Any]) -> dict[str, Any]:
        return {"type": "Feature", "geometry": {"type": kind, "coordinates": coordinates}, "properties": properties}


@cache
def load_network(path: Path) -> RoadNetwork:
    return RoadNetwork(path)
