"""The public contract: buf lint clean, committed generated code fresh and importable as-is."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("generate", ROOT / "protos" / "generate.py")
assert _spec and _spec.loader
generator = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generator)
DEFAULT_OUT, generate = generator.DEFAULT_OUT, generator.generate


def test_buf_lint_is_clean() -> None:
    buf = Path(sys.executable).with_name("buf")
    result = subprocess.run([str(buf), "lint"], cwd=ROOT / "protos", capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_committed_generated_code_is_fresh(tmp_path: Path) -> None:
    fresh = {p.relative_to(tmp_path): p.read_bytes() for p in generate(tmp_path)}
    committed = {
        p.relative_to(DEFAULT_OUT): p.read_bytes()
        for p in DEFAULT_OUT.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert sorted(fresh) == sorted(committed), "generated files differ: run `make protos` and commit"
    stale = [str(name) for name, content in fresh.items() if committed[name] != content]
    assert not stale, f"stale generated code: {stale}; run `make protos` and commit"


def test_generated_code_imports_from_anywhere(tmp_path: Path) -> None:
    code = "from almere.parking.v1 import parking_pb2_grpc, events_pb2; print(parking_pb2_grpc.ParkingServiceStub)"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "ParkingServiceStub" in result.stdout
