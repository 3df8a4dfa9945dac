"""What the stack and the services keep on disk is their owner's only: the data folder 0700; the
databases with their WAL, the logs, the tokens and endpoints.json 0600; the commands that keep
data run under umask 077, so nothing they or their children create is left readable."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from apps.stack import Stack
from services.common.config import Settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_stack_keeps_its_data_for_its_owner(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)  # an existing, readable folder is narrowed too
    stack = Stack(settings=Settings(data_dir=data, log_level="WARNING"), services=["parking"])
    stack.start()
    try:
        private = ["parking.db", "parking.db-wal", "parking.log", "tokens.json", "credentials.json", "endpoints.json"]
        assert _mode(data) == 0o700
        assert {name: oct(_mode(data / name)) for name in private} == dict.fromkeys(private, oct(0o600))
        assert _mode(data / "nats") == 0o700
    finally:
        stack.stop()


def test_an_existing_database_is_narrowed(tmp_path: Path) -> None:
    from services.common.db import make_engine

    database = tmp_path / "db" / "parking.db"
    database.parent.mkdir()
    database.touch(mode=0o644)
    make_engine(f"sqlite:///{database}").dispose()
    assert _mode(database) == 0o600


def test_the_commands_that_keep_data_run_under_umask_077(tmp_path: Path) -> None:
    """`almere migrate` (as serve, up and demo) sets the umask before it writes anything."""
    script = "import os, sys; from apps.cli import main; main(sys.argv[1:]); print(oct(os.umask(0)))"
    env = dict(os.environ, ALMERE_DATA_DIR=str(tmp_path / "data"))
    out = subprocess.run(
        [sys.executable, "-c", script, "migrate", "parking"], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == oct(0o077)
    assert _mode(tmp_path / "data") == 0o700 and _mode(tmp_path / "data" / "parking.db") == 0o600
