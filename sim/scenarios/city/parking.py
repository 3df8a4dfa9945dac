"""The generated city's parking areas and the rerouters of its parking search. The rerouters are
written here rather than by SUMO's generateParkingAreaRerouters.py: that tool routes between every
pair of areas in pure Python (~30 s for 100 areas), while on a regular grid the straight-line nearest
areas are the nearest by road too."""

from __future__ import annotations

from typing import Any

import numpy as np

from sim.scenarios.almere_centrum.layout import Facility

ALTERNATIVES = 5  # the areas a driver finding one full may try next


def rerouters_xml(net: Any, facilities: list[Facility], *, guided: bool) -> str:
    """A rerouter on each area's edge sending a driver who finds it full to one of the ALTERNATIVES
    nearest areas. Blind (`guided` False): the other areas' occupancy is unknown, as drivers without
    information search. Guided: every listed area's occupancy is visible, and the same rerouter stands
    on the roads into the area's edge, so drivers re-plan before they reach a full area."""
    centres = np.array([net.getEdge(f.edge).getFromNode().getCoord() for f in facilities], dtype=np.float64)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<additional>"]
    for n, f in enumerate(facilities):
        order = np.argsort(np.hypot(*(centres - centres[n]).T), kind="stable")[: ALTERNATIVES + 1]
        edge = net.getEdge(f.edge)
        edges = [edge.getID()]
        if guided:
            edges += sorted(e.getID() for e in edge.getIncoming())
        areas = "".join(
            f'      <parkingAreaReroute id="{facilities[i].facility_id}" '
            f'visible="{"true" if guided or i == n else "false"}"/>\n'
            for i in order
        )
        lines.append(f'  <rerouter id="search-{f.facility_id}" edges="{" ".join(edges)}">')
        lines.append(f'    <interval begin="0" end="1e9">\n{areas}    </interval>')
        lines.append("  </rerouter>")
    lines.append("</additional>")
    return "\n".join(lines) + "\n"
