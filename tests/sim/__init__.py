"""Tests with real SUMO."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def start_libsumo(config: Path, *additional: Path, extra: tuple[str, ...] = ()) -> Any:
    """libsumo (imported the way SUMO_HOME needs) on a scenario's .sumocfg, quiet, with additional files."""
    import libsumo
    import sumo  # noqa: F401  - SUMO_HOME before libsumo

    from libs.sumo_tools import sumo_binary

    args = [sumo_binary("sumo"), "-c", str(config), "--no-step-log", "--no-warnings"]
    if additional:
        args += ["--additional-files", ",".join(str(a) for a in additional)]
    libsumo.start([*args, *extra])
    return libsumo
