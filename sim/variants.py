"""Scenario variants: what happens on the street during a run (scripted incidents)."""

from __future__ import annotations

from dataclasses import dataclass

WALKING_PACE = 1.4  # m/s


@dataclass(frozen=True, kw_only=True)
class ScriptedIncident:
    """A collision on an arterial: `closed_lanes` closed, the others slowed (to walking pace unless said:
    a soft blockage routers only learn about from travel times), or the whole road closed."""

    edge: str
    start_s: float
    end_s: float
    closed_lanes: tuple[int, ...]
    full_closure: bool = False
    title: str = "Collision on the Stadsdreef"
    speed_limit_mps: float = WALKING_PACE  # on the lanes left open


@dataclass(frozen=True, kw_only=True)
class Responder:
    """An ambulance (or fire engine) dispatched to an incident: it asks for signal priority on its way
    when the run has the services."""

    vehicle_id: str
    depart_s: float
    from_edge: str
    to_edge: str


@dataclass(frozen=True, kw_only=True)
class Variant:
    name: str
    base: str
    incidents: tuple[ScriptedIncident, ...] = ()
    event: bool = False  # a large event surges demand towards a venue
    responders: tuple[Responder, ...] = ()


_COLLISION = ScriptedIncident(edge="j22-j32", start_s=1800, end_s=1800 + 45 * 60, closed_lanes=(1,))
VARIANTS = {
    "almere-centrum": Variant(name="almere-centrum", base="almere-centrum"),
    "almere-centrum-incident": Variant(name="almere-centrum-incident", base="almere-centrum", incidents=(_COLLISION,)),
    "almere-centrum-closure": Variant(
        name="almere-centrum-closure",
        base="almere-centrum",
        incidents=(
            ScriptedIncident(
                edge="j22-j32",
                start_s=1800,
                end_s=1800 + 45 * 60,
                closed_lanes=(0, 1),
                full_closure=True,
                title="Stadsdreef closed",
            ),
        ),
    ),
    "almere-centrum-event": Variant(name="almere-centrum-event", base="almere-centrum", event=True),
    "almere-centrum-incident-event": Variant(
        name="almere-centrum-incident-event", base="almere-centrum", incidents=(_COLLISION,), event=True
    ),
    # The collision, and three minutes later an ambulance from the west (the hospital) along the
    # Stadsdreef's lights to the scene.
    "almere-centrum-emergency": Variant(
        name="almere-centrum-emergency",
        base="almere-centrum",
        incidents=(_COLLISION,),
        responders=(Responder(vehicle_id="ambulance-1", depart_s=1980, from_edge="ext-w-j02", to_edge="j22-j32"),),
    ),
}
