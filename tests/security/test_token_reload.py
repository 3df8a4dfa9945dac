"""A running service follows its tokens file: a caller revoked with `almere token revoke` is refused
within about two seconds, one issued with `almere token issue` accepted, without a restart; an
expired token is refused like an unknown one, and the log says it expired."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from almere.parking.v1 import parking_pb2 as pb
from almere.parking.v1 import parking_pb2_grpc

from apps.cli import main
from services.common.auth import issue_token, token_digest
from services.parking.service import SPEC as PARKING

Start = Callable[..., Awaitable[str]]
WITHIN_S = 2.5  # the file is looked at once a second


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    assert main(["token", *args]) == 0
    return capsys.readouterr().out.strip()


async def _code(stub: parking_pb2_grpc.ParkingServiceStub, token: str) -> tuple[grpc.StatusCode, str]:
    try:
        await stub.ListFacilities(pb.ListFacilitiesRequest(), metadata=(("authorization", f"Bearer {token}"),))
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


async def _until(stub: parking_pb2_grpc.ParkingServiceStub, token: str, code: grpc.StatusCode) -> tuple[float, str]:
    """Seconds until a call with `token` ends with `code`, and its details."""
    started = time.monotonic()
    while (answer := await _code(stub, token))[0] != code:
        assert time.monotonic() - started < WITHIN_S, f"still {answer} after {WITHIN_S} s"
        await asyncio.sleep(0.05)
    return time.monotonic() - started, answer[1]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_a_running_service_follows_its_tokens_file(
    start_service: Start, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "secrets" / "tokens.json"
    desk = issue_token(path, "desk", "engineer")
    address = await start_service(PARKING, tokens=None, tokens_file=path)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = parking_pb2_grpc.ParkingServiceStub(channel)
        assert await _code(stub, desk) == (grpc.StatusCode.OK, "")

        counter = _cli(
            capsys,
            "issue",
            "--caller",
            "counter",
            "--role",
            "operator:op-a",
            "--expires-in",
            "30d",
            "--file",
            str(path),
        )
        await _until(stub, counter, grpc.StatusCode.OK)
        assert {t["caller"]: "expires" in t for t in json.loads(path.read_text())["tokens"]} == {
            "desk": False,
            "counter": True,
        }

        _cli(capsys, "revoke", "--caller", "desk", "--file", str(path))
        assert main(["token", "revoke", "--caller", "nobody", "--file", str(path)]) == 1
        assert capsys.readouterr().err == f"error: no caller nobody in {path}\n"
        _, details = await _until(stub, desk, grpc.StatusCode.UNAUTHENTICATED)
        assert details == "missing or invalid 'authorization: Bearer <token>' metadata"
        assert await _code(stub, counter) == (grpc.StatusCode.OK, "")

        data = json.loads(path.read_text())
        data["tokens"].append(
            {
                "caller": "visitor",
                "role": "sim",
                "sha256": token_digest("visitor-token"),
                "expires": "2020-01-01T00:00Z",
            }
        )
        path.write_text(json.dumps(data))
        expired_answer = (grpc.StatusCode.UNAUTHENTICATED, "the bearer token has expired; ask for a new one")
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger="almere.access"):
            # Refused as unknown until the file is read again, then as expired.
            while (answer := await _code(stub, "visitor-token")) != expired_answer:
                assert answer[0] == grpc.StatusCode.UNAUTHENTICATED and time.monotonic() - started < WITHIN_S
                await asyncio.sleep(0.05)
        expired = [r for r in caplog.records if getattr(r, "reason", None) == "expired"]
        assert [(r.levelname, r.caller) for r in expired] == [("WARNING", "visitor")]  # type: ignore[attr-defined]
        assert "with an expired token of caller visitor" in expired[0].getMessage()
