"""A scenario build is reused only for the same inputs and the same generating code."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sim.scenarios import build_cache


@dataclass(frozen=True, kw_only=True)
class Built:
    network: Path
    trips: int


def test_a_build_is_reused_for_the_same_inputs_only(tmp_path: Path) -> None:
    manifest = tmp_path / "scenario.json"
    inputs = {"scale": 1.0, "code": "abc"}
    assert build_cache.cached(manifest, inputs) is None
    build_cache.save(manifest, inputs, Built(network=tmp_path / "a.net.xml", trips=7))
    assert build_cache.cached(manifest, inputs) == {"network": str(tmp_path / "a.net.xml"), "trips": 7}
    assert build_cache.cached(manifest, {**inputs, "scale": 0.5}) is None


def test_the_code_digest_follows_every_module_of_the_packages(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "layout.py").write_text("X = 1\n")
    (tmp_path / "b" / "demand.py").write_text("Y = 1\n")
    before = build_cache.code_digest(tmp_path / "a", tmp_path / "b")
    assert build_cache.code_digest(tmp_path / "a", tmp_path / "b") == before
    (tmp_path / "b" / "demand.py").write_text("Y = 2\n")
    assert build_cache.code_digest(tmp_path / "a", tmp_path / "b") != before
