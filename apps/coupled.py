"""Runs coupled to the services: start the stack on the scenario's network (with development tokens
for the twin's field devices), run, stop the stack. Baselines need no services: `run_modes` runs them
side by side on their own and only the coordinated runs with the stack."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from almere.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from almere.signals.v1 import signals_pb2, signals_pb2_grpc
from google.protobuf.field_mask_pb2 import FieldMask

from apps.stack import Stack, dev_callers
from services.common.config import Settings
from sim.runner import RunSpec, prepare, run_many


def twin_callers(operator_ids: Iterable[str]) -> dict[str, str]:
    """The callers of the twin's field devices (sim/devices.py): an engineer registers the scenario's
    facilities, the twin itself reports vehicles, lane counts and scripted incidents, ems asks for the
    responders' priority, and each garage's counter reports with its operator's token."""
    operators = {f"operator-{op}": f"operator:{op}" for op in sorted(set(operator_ids))}
    return {**dev_callers("engineer", "sim", "ems"), **operators}


def import_lights(stack: Stack) -> None:
    """The signal service takes over the network's lights, so its plans drive SUMO's, and every one
    applies the optimizer's adaptive steps without approval (a test bed; in the city an engineer
    approves each takeover)."""
    auth = (("authorization", f"Bearer {stack.credentials['engineer']}"),)
    with stack.blocking_channel("signals") as channel:
        signals = signals_pb2_grpc.SignalServiceStub(channel)
        signals.ImportNetwork(signals_pb2.ImportNetworkRequest(), metadata=auth)
        listed = signals.ListIntersections(signals_pb2.ListIntersectionsRequest(page_size=1000), metadata=auth)
        for doc in listed.intersections:
            doc.proposal_policy = signals_pb2.PROPOSAL_POLICY_AUTO_APPLY
            mask = FieldMask(paths=["proposal_policy"])
            signals.UpdateIntersection(
                signals_pb2.UpdateIntersectionRequest(intersection=doc, update_mask=mask), metadata=auth
            )


def _equip(stack: Stack, shares: set[float]) -> None:
    """The optimizer's strategy names the share of vehicles that follow it; the twin equips that share,
    the same as SUMO's rerouting device gets in mode sumo."""
    if len(shares) != 1:
        raise ValueError("runs sharing a stack share one equipped share")
    with stack.blocking_channel("optimizer") as channel:
        optimizer_pb2_grpc.OptimizerServiceStub(channel).SetStrategy(
            optimizer_pb2.SetStrategyRequest(
                strategy=optimizer_pb2.Strategy(equipped_share=shares.pop()),
                update_mask=FieldMask(paths=["equipped_share"]),
            ),
            metadata=(("authorization", f"Bearer {stack.credentials['engineer']}"),),
        )


def run_with_stack(specs: list[RunSpec], say: Callable[[str], None] = print) -> list[Path]:
    scenario = prepare(specs[0])
    settings = Settings(data_dir=specs[0].out_root / "stack", network_file=scenario.network, log_level="WARNING")
    stack = Stack(settings=settings, callers=twin_callers(f.operator_id for f in scenario.parking_facilities()))
    stack.start()
    say(stack.describe())
    import_lights(stack)
    _equip(stack, {s.equipped for s in specs})
    try:
        # One after another: runs sharing a stack would report to the same facilities at once.
        return run_many([replace(s, services_dir=stack.data_dir) for s in specs], workers=1)
    finally:
        stack.stop()


def run_modes(specs: list[RunSpec], say: Callable[[str], None] = print) -> list[Path]:
    """Baseline runs two at a time without services (nothing is coordinated in them), then the
    coordinated runs one after another with the stack (they share its facilities)."""
    baselines = [s for s in specs if s.mode != "coordinated"]
    coordinated = [s for s in specs if s.mode == "coordinated"]
    runs = run_many(baselines) if baselines else []
    return runs + (run_with_stack(coordinated, say) if coordinated else [])


@contextmanager
def adaptive_stack(network: Path, data_dir: Path) -> Iterator[tuple[str, str]]:
    """The signal service and the optimizer on `network`, the lights imported and every one set to
    apply the optimizer's steps without approval (a test bed; in the city an engineer approves each
    takeover). Yields the optimizer's address and the twin's token."""
    stack = Stack(
        settings=Settings(data_dir=data_dir, network_file=network, log_level="WARNING"),
        services=["signals", "optimizer"],
        callers=dev_callers("engineer", "sim"),
    )
    stack.start()
    try:
        import_lights(stack)
        yield stack.endpoints["optimizer"], stack.credentials["sim"]
    finally:
        stack.stop()
