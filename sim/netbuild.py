"""Build SUMO networks from plain-XML nodes and edges whose coordinates are WGS84 (x = lon, y = lat)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

NETWORKS = Path(__file__).resolve().parent / "networks"


def netconvert() -> str:
    import sumo  # noqa: F401  - sets SUMO_HOME to the eclipse-sumo wheel before sumolib looks for binaries
    import sumolib

    return str(sumolib.checkBinary("netconvert"))


def build_network(name: str, out_dir: Path) -> Path:
    """Build networks/<name>/ into out_dir (UTM-projected, geo-referenced); reuse an up-to-date build."""
    source = NETWORKS / name
    nodes, edges = source / "nodes.nod.xml", source / "edges.edg.xml"
    digest = hashlib.sha256(nodes.read_bytes() + edges.read_bytes()).hexdigest()[:12]
    out = out_dir / f"{name}-{digest}.net.xml"
    if out.exists():
        return out
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.xml")
    subprocess.run(
        [netconvert(), "--node-files", str(nodes), "--edge-files", str(edges), "--proj.utm",
         "--output-file", str(tmp), "--no-warnings", "--log", str(out_dir / f"{name}.netconvert.log")],
        check=True, capture_output=True,
    )  # fmt: skip
    shutil.move(tmp, out)
    return out
