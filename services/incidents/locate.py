"""Placing an incident on the road network: check a given edge and its lanes, or snap a WGS84
location to the nearest drivable lane. Without a configured network, locations are taken as given."""

from __future__ import annotations

from almere.incidents.v1 import incidents_pb2 as pb
from almere.type.v1 import geo_pb2

from services.common.errors import InvalidArgument
from services.common.network import RoadNetwork
from services.incidents import logic


def locate(incident: pb.Incident, network: RoadNetwork | None) -> None:
    """Fill in and check `incident.network_location` (and `location` when only an edge is given)."""
    if network is None:
        return
    loc = incident.network_location
    if loc.edge_id:
        length = network.edge_length(loc.edge_id)
        if loc.position_meters > length:
            raise InvalidArgument(
                f"network_location.position_meters {loc.position_meters:.1f} is beyond the end of edge "
                f"{loc.edge_id!r} ({length:.1f} m)"
            )
        loc.snapped, loc.snap_distance_meters = False, 0.0
        if not incident.HasField("location"):
            lat, lng = network.lat_lng_at(loc.edge_id, loc.position_meters or length / 2)
            incident.location.CopyFrom(geo_pb2.LatLng(latitude=lat, longitude=lng))
    else:
        snap = network.snap(incident.location.latitude, incident.location.longitude)
        loc.edge_id = snap.edge_id
        loc.lane_indices[:] = [snap.lane_index]
        loc.position_meters = snap.position_m
        loc.snapped, loc.snap_distance_meters = True, snap.distance_m
    logic.check_lanes_exist(incident, network.lane_count(loc.edge_id))
