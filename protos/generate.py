"""Generate the Python code for every .proto under protos/ into protos/gen/python.

Run with `make protos` (or `python protos/generate.py [OUT_DIR]`). The output is committed; the
test suite regenerates into a temporary folder and fails when the committed copy is stale.
"""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent
DEFAULT_OUT = PROTO_ROOT / "gen" / "python"


def proto_files() -> list[Path]:
    return sorted(p for p in PROTO_ROOT.rglob("*.proto") if "gen" not in p.relative_to(PROTO_ROOT).parts)


def generate(out_dir: Path = DEFAULT_OUT) -> list[Path]:
    """Write *_pb2.py(i), *_pb2_grpc.py(i) and package __init__ files; return every file written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = str(resources.files("grpc_tools") / "_proto")
    files = [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    # Typed stubs (messages and gRPC stubs/servicers) come from mypy-protobuf's plugins.
    plugins = Path(sys.executable).parent
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--plugin=protoc-gen-mypy={plugins / 'protoc-gen-mypy'}",
        f"--plugin=protoc-gen-mypy_grpc={plugins / 'protoc-gen-mypy_grpc'}",
        f"--python_out={out_dir}",
        f"--mypy_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        f"--mypy_grpc_out={out_dir}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise RuntimeError("protoc failed")
    for package_dir in {p.parent for p in out_dir.rglob("*_pb2.py")}:
        for folder in [package_dir, *package_dir.relative_to(out_dir).parents]:
            path = folder if folder.is_absolute() else out_dir / folder
            if path != out_dir:
                (path / "__init__.py").touch()
    (out_dir / "almere" / "py.typed").touch()
    return sorted(p for p in out_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    for path in generate(target):
        print(path)
