"""Runs coupled to the services: start the stack on the scenario's network (with development tokens
for the twin's field devices), run, stop the stack. Baselines need no services: `run_modes` runs them
on their own beside the coordinated runs with the stack."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from almere.optimizer.v1 import optimizer_pb2, optimizer_pb2_grpc
from almere.signals.v1 import signals_pb2, signals_pb2_grpc
from google.protobuf.field_mask_pb2 import FieldMask

from apps.stack import TWIN_SERVICES, Stack, dev_callers
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


@contextmanager
def coupled_stack(
    specs: list[RunSpec], say: Callable[[str], None] = print, *, stack_dir: Path | None = None, alone: bool = True
) -> Iterator[Stack]:
    """A stack for the runs (in `stack_dir`, default <out>/stack), started, its lights imported and
    its strategy equipping the runs' share; `alone`: no other stack starts beside it (it may take the
    well-known ports)."""
    scenario = prepare(specs[0])
    data_dir = stack_dir or specs[0].out_root / "stack"
    settings = Settings(data_dir=data_dir, network_file=scenario.network, log_level="WARNING")
    stack = Stack(
        settings=settings,
        services=list(TWIN_SERVICES),
        callers=twin_callers(f.operator_id for f in scenario.parking_facilities()),
        default_ports=alone,
        reports_dir=specs[0].out_root,
    )
    stack.start()
    try:
        say(stack.describe())
        import_lights(stack)
        _equip(stack, {s.equipped for s in specs})
        yield stack
    finally:
        stack.stop()


def run_with_stack(
    specs: list[RunSpec], say: Callable[[str], None] = print, *, stack_dir: Path | None = None, alone: bool = True
) -> list[Path]:
    """The runs one after another on a stack of their own (see `coupled_stack`)."""
    with coupled_stack(specs, say, stack_dir=stack_dir, alone=alone) as stack:
        # One after another: runs sharing a stack would report to the same facilities at once.
        return run_many([replace(s, services_dir=stack.data_dir) for s in specs], workers=1)


def reopen_stack(spec: RunSpec, *, stack_dir: Path) -> Stack:
    """A stack (not yet started) on what a coupled run's stack left in `stack_dir` (its databases and
    its bus): the dashboard then shows the city as the run ended it, and the run's report."""
    settings = Settings(data_dir=stack_dir, network_file=prepare(spec).network, log_level="WARNING")
    return Stack(settings=settings, callers=dev_callers("engineer", "police"), reports_dir=spec.out_root)


def run_modes(specs: list[RunSpec], say: Callable[[str], None] = print, *, stacks: int = 1) -> list[Path]:
    """The coordinated runs with the services and, beside them, the baselines without (nothing is
    coordinated in them): one at a time while a coordinated run needs the other core, two at a time
    when there is none. The coordinated runs are the long ones, so the baselines add no wall time.

    Coordinated runs sharing a stack go one after another (they would report to the same facilities
    at once); `stacks` > 1 spreads them over that many stacks of their own, side by side: in lockstep
    a run mostly waits for its services' answers (the demo's coordinated run, its stack and the
    baselines kept 0.8 of 2 cores busy), so runs on their own stacks overlap."""
    baselines = [s for s in specs if s.mode != "coordinated"]
    coordinated = [s for s in specs if s.mode == "coordinated"]
    if not coordinated:
        return run_many(baselines)
    for spec in specs:  # build once, here, before the threads' processes read the files
        prepare(spec)
    groups = [coordinated[i::stacks] for i in range(min(stacks, len(coordinated)))]
    with ThreadPoolExecutor(1 + len(groups)) as pool:
        baseline_runs = pool.submit(run_many, baselines, workers=1) if baselines else None
        stack_dirs = [None] if len(groups) == 1 else [g[0].out_root / f"stack-{i + 1}" for i, g in enumerate(groups)]
        grouped = [
            pool.submit(run_with_stack, group, say, stack_dir=stack_dir, alone=len(groups) == 1)
            for group, stack_dir in zip(groups, stack_dirs, strict=True)
        ]
        done = {
            spec: run
            for group, runs in zip(groups, grouped, strict=True)
            for spec, run in zip(group, runs.result(), strict=True)
        }
        return (baseline_runs.result() if baseline_runs else []) + [done[s] for s in coordinated]


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
