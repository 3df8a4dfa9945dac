"""A scenario build is reused when a manifest beside it records the same inputs: the build's
parameters and a digest of the code that generates it (a changed layout or demand means a new
build)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any


def code_digest(*packages: Path) -> str:
    """A digest of the generating code: every module of these package folders."""
    sources = sorted(p for folder in packages for p in folder.resolve().glob("*.py"))
    return hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]


def cached(manifest: Path, inputs: dict[str, Any]) -> dict[str, Any] | None:
    """The saved scenario's fields when the build in the manifest's folder had these inputs."""
    if not manifest.exists():
        return None
    data = json.loads(manifest.read_text())
    return data["scenario"] if data.get("inputs") == inputs else None


def save(manifest: Path, inputs: dict[str, Any], scenario: Any) -> None:
    """Record a finished build (a dataclass; paths as strings)."""
    fields = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(scenario).items()}
    manifest.write_text(json.dumps({"inputs": inputs, "scenario": fields}))
