"""The small networks kept as plain XML under sim/networks/ (the local stack's centrum-mini), built
with netconvert on first use."""

from __future__ import annotations

from pathlib import Path

from libs.sumo_tools import convert

NETWORKS = Path(__file__).resolve().parent / "networks"


def build_network(name: str, out_dir: Path) -> Path:
    """Build networks/<name>/ into out_dir."""
    source = NETWORKS / name
    return convert(source / "nodes.nod.xml", source / "edges.edg.xml", out_dir / f"{name}.net.xml")
