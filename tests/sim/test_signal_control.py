"""Adaptive signal control: what the controllers show on a real RESCO network passes the signal
service's plan validation, and the guards (spill-back, starvation, deadlock) do their job on small
hand-built cases."""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ProcessPoolExecutor
from itertools import pairwise
from multiprocessing import get_context
from typing import Any

import pytest
from almere.signals.v1 import signals_pb2 as pb

from apps.signal_bench import record_states
from libs.signal_control.controller import COORDINATED, OURS, PressureActuated, PressureActuatedParams
from libs.signal_control.loop import ControlLoop
from libs.signal_control.maxpressure import MaxPressure, Params
from libs.signal_control.model import Intersection, PhaseClock, PlatoonSource, Snapshot
from libs.signal_control.phases import build_program, transition_steps
from services.common.errors import InvalidArgument
from services.signals import logic
from services.signals.network_import import read_lights
from sim.scenarios import resco

SHORT_RUN_S = 600.0
ANY_CYCLE = logic.CycleBounds(min_s=0.0, max_s=math.inf)  # an adaptive sequence has no fixed cycle


def as_plan(history: list[tuple[float, str]]) -> pb.Plan:
    """A recorded sequence of (start, state) as a plan: each state lasts until the next one. The
    last state is cut by the end of the run, so it is dropped; the sequence is closed by turning
    whatever is still green yellow for 3 s (validation wraps around from the last phase to the first)."""
    phases = [pb.Phase(state=s, duration=t1 - t0) for (t0, s), (t1, _) in pairwise(history)]
    closing = "".join("y" if c in "GgyY" else "r" for c in phases[-1].state)
    phases.append(pb.Phase(state=closing, duration=logic.MIN_YELLOW_S))
    return pb.Plan(type=pb.PLAN_TYPE_STATIC, phases=phases)


@pytest.fixture(scope="module")
def cologne8_links() -> dict[str, list[pb.SignalLink]]:
    lights = read_lights(resco.locate("cologne8").network)
    return {light.intersection.sumo_tls_id: list(light.intersection.links) for light in lights}


@pytest.fixture(scope="module")
def recorded() -> dict[str, dict[str, Any]]:
    """10 simulated minutes of cologne8 per controller, each in its own process (libsumo)."""
    names = ("fixed", "maxpressure", "ours")
    with ProcessPoolExecutor(2, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        runs = list(pool.map(record_states, ["cologne8"] * len(names), names, [SHORT_RUN_S] * len(names)))
    return dict(zip(names, runs, strict=True))


def windows(history: list[tuple[float, str]], size: int = 60, step: int = 50) -> list[list[tuple[float, str]]]:
    """Overlapping stretches of a recording: a plan holds at most 64 phases."""
    return [history[i : i + size] for i in range(0, max(1, len(history) - size + step), step)]


@pytest.mark.parametrize("controller", ["fixed", "maxpressure", "ours"])
def test_every_shown_sequence_passes_the_signal_services_validation(
    controller: str, recorded: dict[str, dict[str, Any]], cologne8_links: dict[str, list[pb.SignalLink]]
) -> None:
    run = recorded[controller]
    assert set(run["histories"]) == set(cologne8_links)
    for tls, history in run["histories"].items():
        if controller != "fixed":
            assert len(history) > 10, f"{tls}: an adaptive controller that never switches was not tested"
        for stretch in windows(history):
            logic.validate_plan(cologne8_links[tls], as_plan(stretch), ANY_CYCLE)
    assert run["longest_wait_s"] < 300  # no gridlock in the short run


def test_the_validation_used_above_rejects_a_green_cut_without_yellow(
    recorded: dict[str, dict[str, Any]], cologne8_links: dict[str, list[pb.SignalLink]]
) -> None:
    """The check can fail: the same recording with its yellow states removed is refused."""
    tls, history = next(iter(recorded["ours"]["histories"].items()))
    no_yellow = [(t, s) for t, s in history if "y" not in s]
    with pytest.raises(InvalidArgument, match="yellow"):
        logic.validate_plan(cologne8_links[tls], as_plan(no_yellow[:60]), ANY_CYCLE)


# --- hand-built cases -----------------------------------------------------------------------------
# A crossing: link 0 north->south (lane n -> s), link 1 west->east (lane w -> e); two greens.


def crossing() -> Intersection:
    program = build_program(
        "x",
        [("Gr", 30.0), ("yr", 3.0), ("rG", 30.0), ("ry", 3.0)],
        [[("n_0", "s_0", ":x_0")], [("w_0", "e_0", ":x_1")]],
    )
    return Intersection(
        program,
        upstream={"n_0": (("n_0", 1.0),), "w_0": (("w_0", 1.0),)},
        downstream={"s_0": (("s_0", 1.0),), "e_0": (("e_0", 1.0),)},
        entry={"s_0": (("s_0",), 100.0), "e_0": (("e_0",), 100.0)},
        near={"n_0": (("n_0", 0.0),), "w_0": (("w_0", 0.0),)},
    )


def drive(controller: MaxPressure, snapshot: Any, seconds: int) -> list[tuple[float, str]]:
    """Step a controller once a second on snapshots made by `snapshot(t, shown_state)`."""
    shown = [(0.0, controller.start(0.0).state)]
    for t in range(1, seconds + 1):
        decision = controller.tick(float(t))
        if decision is None and controller.due(float(t)):
            decision = controller.decide(snapshot(float(t), shown[-1][1]))
        if decision is not None:
            shown.append((float(t), decision.state))
    return shown


def test_transitions_are_derived_from_the_states_with_at_least_3_s_of_yellow() -> None:
    assert transition_steps("GGrr", "rrGG", yellow_s=2.0) == (("yyrr", 3.0),)
    assert transition_steps("GgGr", "rGGr", yellow_s=4.0) == (("ygGr", 4.0),)  # kept greens keep their letter
    assert transition_steps("Grrr", "GGrr", yellow_s=3.0) == ()  # only adds green: no clearance
    # Caught mid-yellow (a light handed back during a step's transition): the yellow runs its full
    # length again, then all red, before any new green.
    assert transition_steps("yGrr", "GrrG", 3.0, 2.0) == (("yyrr", 3.0), ("rrrr", 2.0))


def test_the_deadlock_guard_leaves_a_green_that_moves_nobody() -> None:
    """Twelve cars stand on the green approach and never move (in SUMO: the head car yields inside
    the junction to a car that is itself stuck). Pressure alone keeps that green for ever; the guard
    gives the other approach its turn."""

    def stuck(t: float, _: str) -> Snapshot:
        return Snapshot(t, {"n_0": 12, "w_0": 2}, {"n_0": 12, "w_0": 2})

    without = drive(MaxPressure(crossing(), Params(stuck_s=math.inf, max_red_s=math.inf)), stuck, 120)
    assert [s for _, s in without] == ["Gr"]
    shown = drive(MaxPressure(crossing(), Params(stuck_s=20.0, max_red_s=math.inf)), stuck, 120)
    # the watch starts once min green (5 s) is served; 20 s later the green is given up
    assert shown[1:3] == [(25.0, "yr"), (28.0, "rG")]


def test_an_intersection_whose_every_exit_is_full_shows_red_until_room_appears() -> None:
    """Both exits queued back to the junction (gridlock around it): nobody gets green, no car is
    sent into the junction box; when east clears, west -> east gets green at once."""

    def jammed_until_60(t: float, _: str) -> Snapshot:
        east = 14 if t < 60 else 0  # 14 x 7.5 m fill the 100 m exit
        counts = {"n_0": 5, "w_0": 5, "s_0": 14, "e_0": east}
        return Snapshot(t, counts, counts)

    controller = MaxPressure(crossing(), Params(stuck_s=20.0, max_red_s=math.inf))
    shown = drive(controller, jammed_until_60, 120)
    assert shown[:3] == [(0.0, "Gr"), (5.0, "yr"), (8.0, "rr")]
    assert all(s == "rr" for t, s in shown if 8 <= t < 60)
    assert next((t, s) for t, s in shown if t >= 60) == (60.0, "rG")


def test_the_starvation_guard_bounds_red() -> None:
    """One car waits west while north always has more: max-pressure alone never serves west."""

    def busy_north(t: float, _: str) -> Snapshot:
        return Snapshot(t, {"n_0": 20, "w_0": 1}, {"n_0": 0, "w_0": 1}, {"n_0": ((5.0, 10.0),)})

    for controller, max_red in (
        (MaxPressure(crossing(), Params(max_red_s=45.0)), 45.0),
        (PressureActuated(crossing()), 90.0),
    ):
        shown = drive(controller, busy_north, 400)
        greens_west = [t for t, s in shown if s[1] == "G"]
        assert greens_west, f"{controller.name}: west never got green"
        # red since the start (t=0), switch decided at max red, then 3 s of yellow
        assert greens_west[0] <= max_red + 3.0 + 1.0
    unguarded = drive(MaxPressure(crossing(), Params(max_red_s=math.inf)), busy_north, 400)
    assert all(s[1] != "G" for _, s in unguarded)


def test_the_spill_back_guard_never_gives_green_into_a_full_lane() -> None:
    """East is queued back to the junction: west->east stays red although west has the pressure,
    and a running green into a lane that fills up is ended by yellow, then red."""

    def east_full(t: float, _: str) -> Snapshot:
        counts = {"n_0": 1, "w_0": 30, "e_0": 14}
        return Snapshot(t, counts, {"w_0": 30, "e_0": 14})

    shown = drive(MaxPressure(crossing(), Params()), east_full, 120)
    assert all(s[1] not in "Gg" for _, s in shown)

    def east_fills_at_30(t: float, _: str) -> Snapshot:
        counts = {"n_0": 0, "w_0": 30, "e_0": 14 if t >= 30 else 0}
        return Snapshot(t, counts, {"w_0": 30, "e_0": 14 if t >= 30 else 0})

    shown = drive(MaxPressure(crossing(), Params(max_red_s=math.inf)), east_fills_at_30, 60)
    after = [(t, s[1]) for t, s in shown if t >= 30]
    assert after[:2] == [(30.0, "y"), (33.0, "r")]


def test_ours_leaves_a_gapped_out_green_only_when_the_next_car_is_a_yellow_away() -> None:
    """North has green and a car still far away (gapped out); one car comes west at 10 m/s from
    100 m. Switching at min green (5 s) would show west green 5 s before its car arrives: ours
    starts the 3 s yellow when that car is 3 s away, so green comes as it arrives and north is
    served meanwhile. A lane fed by a signal just upstream (`seen_s`) may bring a car any moment:
    no waiting there."""

    def one_car_each(t: float, _: str) -> Snapshot:
        positions = {"n_0": ((200.0, 10.0),), "w_0": ((max(0.0, 100.0 - 10.0 * t), 10.0),)}
        return Snapshot(t, {"n_0": 1, "w_0": 1}, {}, positions)

    assert drive(PressureActuated(crossing()), one_car_each, 15)[1:3] == [(7.0, "yr"), (10.0, "rG")]
    at_once = drive(PressureActuated(crossing(), PressureActuatedParams(lead_s=None)), one_car_each, 15)
    assert at_once[1:3] == [(5.0, "yr"), (8.0, "rG")]
    fed_by_a_signal = dataclasses.replace(crossing(), seen_s={"w_0": 2.0})
    assert drive(PressureActuated(fed_by_a_signal), one_car_each, 15)[1:3] == [(5.0, "yr"), (8.0, "rG")]


def test_priority_turns_a_light_through_yellow_never_straight_to_a_conflicting_green() -> None:
    # sim/priority.py switches a light for an ambulance with the controllers' own transition.
    from libs.signal_control.phases import transition_steps

    def yellow_between(current: str, target: str) -> str:
        steps = transition_steps(current, target, 3.0)
        return steps[0][0] if steps else current

    assert yellow_between("GGrr", "rrGG") == "yyrr"  # green that loses right of way turns yellow first
    assert yellow_between("GgrrG", "GrGGG") == "GyrrG"  # green that stays green stays
    assert yellow_between("rrGG", "rrGG") == "rrGG"  # already the target: no yellow


def test_coordination_holds_a_green_for_a_platoon_released_up_the_road() -> None:
    """North gapped out at min green; one car waits west. A light 20 s up the north road ("up")
    turned green at t=0 for four waiting cars. PressureActuated serves west at once; with platoon holds the
    green is kept for the platoon (four outweigh one), and not when north's exit is queued (the
    platoon would stop there anyway)."""
    layout = dataclasses.replace(crossing(), platoons={"n_0": (PlatoonSource("up", frozenset({0}), ("u_0",), 20.0),)})
    upstream = PhaseClock(build_program("up", [("G", 30.0), ("y", 3.0)], [[("u_0", "n_0", ":up_0")]]), 5.0)
    upstream.start(0.0)

    def platoon_coming(exit_queued: int) -> Any:
        def snapshot(t: float, _: str) -> Snapshot:
            return Snapshot(t, {"w_0": 1, "u_0": 4, "s_0": exit_queued}, {"w_0": 1, "s_0": exit_queued})

        return snapshot

    def first_switch(params: PressureActuatedParams, exit_queued: int = 0) -> float:
        controller = PressureActuated(layout, params)
        ControlLoop([controller]).clocks["up"] = upstream  # the light up the road, run by the same loop
        return drive(controller, platoon_coming(exit_queued), 40)[1][0]

    assert first_switch(OURS) == 5.0
    assert first_switch(COORDINATED) > 15.0
    assert first_switch(COORDINATED, exit_queued=3) == 5.0


def test_a_priority_call_gets_its_green_through_a_yellow_and_keeps_it() -> None:
    """North has all the traffic; a grant for west (its state "rG") is called at t=10. West gets
    green 3 s later (after north's yellow) and keeps it, although north's pressure grows, until the
    call ends at t=40; then north gets its green back."""
    controller = PressureActuated(crossing())

    def north_busy(t: float, _: str) -> Snapshot:
        controller.call("rG" if 10 <= t < 40 else None)
        return Snapshot(t, {"n_0": 10 + int(t)}, {"n_0": 10 + int(t)}, {"n_0": ((5.0, 10.0),)})

    shown = drive(controller, north_busy, 60)
    assert shown[1:3] == [(10.0, "yr"), (13.0, "rG")]
    assert all(s == "rG" for t, s in shown if 13 <= t < 40)
    assert shown[3:5] == [(40.0, "ry"), (43.0, "Gr")]


def test_a_controller_takes_a_light_over_from_what_it_shows() -> None:
    """The light holds an earlier controller's last step ("Gg"): the new one starts at the closest
    green, clearing what loses green through a 3 s yellow; no state shown is ever abrupt."""
    controller = PressureActuated(crossing())
    assert controller.start(0.0, shown="rG").state == "rG"  # a green of the program: kept as it is
    controller = PressureActuated(crossing())
    assert controller.start(0.0, shown="Gg").state == "Gy"
    assert controller.tick(2.0) is None
    assert controller.tick(3.0).state == "Gr"  # type: ignore[union-attr]


@pytest.mark.parametrize("network", ["cologne8", "ingolstadt21"])
def test_every_takeover_passes_the_signal_services_step_validation(network: str) -> None:
    """The first step of each light (taking over from the imported plan) is one the signal service
    accepts: on ingolstadt21 some greens lose permissive turns (`protect_turns`), which must clear
    through a yellow rather than vanish."""
    from libs.signal_control.layout import intersections
    from services.optimizer.adaptive_control import step_plan

    path = resco.locate(network).network
    imported = {light.intersection.sumo_tls_id: light for light in read_lights(path)}
    for layout in intersections(path):
        controller = PressureActuated(layout)
        controller.start(0.0)
        step = step_plan(controller.clock.outlook(0.0), 5.0, "start")
        light = imported[layout.tls_id]
        logic.validate_step(list(light.intersection.links), step, light.plan)


def test_a_controller_taking_a_light_over_again_starts_afresh() -> None:
    """Its takeover waited for approval (its clock had a transition pending); resumed later from the
    approved step's state, the step it proposes starts now and every state lasts a while."""
    from services.optimizer.adaptive_control import step_plan

    controller = PressureActuated(crossing())
    controller.start(0.0, shown="Gg")  # a yellow pending until 3 s
    controller.start(60.0, shown="Gr")
    outlook = controller.clock.outlook(60.0)
    assert outlook == [("Gr", 60.0)]
    assert all(p.duration > 0 for p in step_plan(outlook, 5.0, "start").phases)


@pytest.mark.parametrize("network", ["cologne8", "ingolstadt21"])
def test_the_loops_pressure_table_gives_every_lights_gates_and_scores_bit_for_bit(network: str) -> None:
    """What a control loop computes for all its lights at once (`PressureTable`) is what each
    controller would compute alone: the links into spilled-back lanes, and each green's score as
    the very same float (a different rounding could flip a close decision), for max-pressure and
    ours (other weights) side by side, on snapshots with queues long enough to gate some links."""
    import random

    from libs.signal_control import guards
    from libs.signal_control.layout import intersections
    from libs.signal_control.pressure import PressureTable

    layouts = intersections(resco.locate(network).network)
    controllers = [(MaxPressure if n % 2 else PressureActuated)(i) for n, i in enumerate(layouts)]
    table = PressureTable(controllers)
    lanes = sorted(frozenset().union(*(i.lanes for i in layouts)))
    rng = random.Random(7)
    gated = 0
    for t in range(20):
        vehicles = {lane: rng.choice((0, 0, 1, 3, 8, 30)) for lane in lanes}
        snap = Snapshot(float(t), vehicles, {lane: rng.randint(0, n) for lane, n in vehicles.items()})
        pressures = table.on(snap)
        for c in controllers:
            gates = guards.links_into(c.intersection, guards.blocked_out_lanes(c.intersection, snap))
            assert pressures.gates(c.tls_id) == gates
            gated += bool(gates)
            greens = range(len(c.intersection.program.greens))
            assert pressures.scores(c.tls_id) == [c.score(i, snap, set()) for i in greens]
    assert gated > 0
