"""SUMO's tools from the eclipse-sumo wheel: where its binaries are, a plain run of a configuration,
and netconvert building networks from plain-XML nodes and edges in WGS84 (x = lon, y = lat)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path


def sumo_binary(name: str) -> str:
    """Path of a SUMO tool (netconvert, sumo, sumo-gui) from the eclipse-sumo wheel."""
    import sumo  # noqa: F401  - sets SUMO_HOME to the eclipse-sumo wheel before sumolib looks for binaries
    import sumolib

    return str(sumolib.checkBinary(name))


def run_sumo(config: Path, tripinfo: Path, *extra: str) -> None:
    """A plain, quiet SUMO run of a configuration, writing tripinfo (unfinished trips included)."""
    subprocess.run(
        [
            sumo_binary("sumo"),
            "-c",
            str(config),
            "--tripinfo-output",
            str(tripinfo),
            "--tripinfo-output.write-unfinished",
            "--no-step-log",
            "--no-warnings",
            *extra,
        ],
        check=True,
        capture_output=True,
    )


def netconvert() -> str:
    return sumo_binary("netconvert")


def convert(nodes: Path, edges: Path, out: Path, extra: list[str] | None = None) -> Path:
    """Run netconvert (UTM-projected, geo-referenced output); reuse an up-to-date build."""
    digest = hashlib.sha256(nodes.read_bytes() + edges.read_bytes() + repr(extra).encode()).hexdigest()[:12]
    target = out.with_name(f"{out.name.removesuffix('.net.xml')}-{digest}.net.xml")
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp.xml")
    subprocess.run(
        [
            netconvert(),
            "--node-files",
            str(nodes),
            "--edge-files",
            str(edges),
            "--proj.utm",
            "--output-file",
            str(tmp),
            "--no-warnings",
            "--log",
            str(target.with_suffix(".log")),
            *(extra or []),
        ],
        check=True,
        capture_output=True,
    )
    shutil.move(tmp, target)
    return target
