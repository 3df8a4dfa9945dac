"""Scenario variants: what happens on the street during a run (scripted incidents)."""

from __future__ import annotations

from dataclasses import dataclass

WALKING_PACE = 1.4  # m/s


@dataclass(frozen=True)
class ScriptedIncident:
    """A collision on an arterial: `closed_lanes` closed, the others slowed to walking pace (a soft
    blockage routers only learn about from travel times), or the whole road closed."""

    edge: str
    start_s: float
    end_s: float
    closed_lanes: tuple[int, ...]
    full_closure: bool = False
    title: str = "Collision on the Stadsdreef"


@dataclass(frozen=True)
class Responder:
    """An ambulance (or fire engine) dispatched to an incident: it asks for signal priority on its way
    when the run has the services."""

    vehicle_id: str
    depart_s: float
    from_edge: str
    to_edge: str


@dataclass(frozen=True)
class Variant:
    name: str
    base: str
    incidents: tuple[ScriptedIncident, ...] = ()
    event: bool = False  # a large event surges demand towards a venue
    responders: tuple[Responder, ...] = ()


_COLLISION = ScriptedIncident(edge="j22-j32", start_s=1800, end_s=1800 + 45 * 60, closed_lanes=(1,))
VARIANTS = {
    "almere-centrum": Variant("almere-centrum", "almere-centrum"),
    "almere-centrum-incident": Variant("almere-centrum-incident", "almere-centrum", (_COLLISION,)),
    "almere-centrum-closure": Variant(
        "almere-centrum-closure",
        "almere-centrum",
        (ScriptedIncident("j22-j32", 1800, 1800 + 45 * 60, (0, 1), full_closure=True, title="Stadsdreef closed"),),
    ),
    "almere-centrum-event": Variant("almere-centrum-event", "almere-centrum", event=True),
    "almere-centrum-incident-event": Variant("almere-centrum-incident-event", "almere-centrum", (_COLLISION,), True),
    # The collision, and three minutes later an ambulance from the west (the hospital) along the
    # Stadsdreef's lights to the scene.
    "almere-centrum-emergency": Variant(
        "almere-centrum-emergency",
        "almere-centrum",
        (_COLLISION,),
        responders=(Responder("ambulance-1", 1980, "ext-w-j02", "j22-j32"),),
    ),
}
