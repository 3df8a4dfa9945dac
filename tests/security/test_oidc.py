"""Bearer JWTs from an identity provider: a real local OIDC provider (discovery document and JWKS over
HTTP on loopback) signs the tokens; the parking service takes the role from the claims, refuses every
kind of bad token with UNAUTHENTICATED and a reason, and follows the provider's key rotation."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
import jwt
import pytest
from almere.parking.v1 import parking_pb2 as pb
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from services.common.auth import Identity, Role
from services.common.oidc import OidcConfig, OidcVerifier, TokenRefused
from services.parking.service import SPEC as PARKING
from tests.integration.helpers import Parking

AUDIENCE = "almere-traffic"
Start = Callable[..., Awaitable[str]]


@dataclass(kw_only=True)
class Provider:
    """An OIDC provider on 127.0.0.1: its signing keys (kid -> private key) are published as its JWKS."""

    url: str = ""
    keys: dict[str, Any] = field(default_factory=dict)
    down: bool = False
    jwks_reads: int = 0

    def add_key(self, kid: str, *, curve: bool = False) -> None:
        self.keys[kid] = ec.generate_private_key(ec.SECP256R1()) if curve else rsa.generate_private_key(65537, 2048)

    def jwks(self) -> dict[str, Any]:
        out = []
        for kid, key in self.keys.items():
            algorithm = ECAlgorithm if isinstance(key, ec.EllipticCurvePrivateKey) else RSAAlgorithm
            out.append({**algorithm.to_jwk(key.public_key(), as_dict=True), "kid": kid, "use": "sig"})
        return {"keys": out}

    def token(self, *, kid: str = "k1", key: Any = None, lifetime_s: float = 300, **claims: Any) -> str:
        signing = key or self.keys[kid]
        now = int(time.time())
        body = {"iss": self.url, "aud": AUDIENCE, "sub": "user-1", "iat": now, "exp": now + int(lifetime_s), **claims}
        algorithm = "ES256" if isinstance(signing, ec.EllipticCurvePrivateKey) else "RS256"
        return jwt.encode({k: v for k, v in body.items() if v is not None}, signing, algorithm, headers={"kid": kid})


@pytest.fixture
def provider() -> Iterator[Provider]:
    state = Provider()
    state.add_key("k1")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if state.down:
                self.send_error(503)
                return
            if self.path == "/.well-known/openid-configuration":
                body = {"issuer": state.url, "jwks_uri": f"{state.url}/jwks.json"}
            elif self.path == "/jwks.json":
                state.jwks_reads += 1
                body = state.jwks()
            else:
                self.send_error(404)
                return
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


async def _call(client: Parking, caller: str) -> tuple[grpc.StatusCode, str]:
    try:
        await client.create(f"g-{caller}", caller=caller)
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_services_accept_the_providers_tokens_and_refuse_bad_ones(
    start_service: Start, provider: Provider, tokens: dict[str, str]
) -> None:
    address = await start_service(PARKING, oidc_issuer=provider.url, oidc_audience=AUDIENCE)
    other = rsa.generate_private_key(65537, 2048)
    published = provider.jwks()["keys"][0]["n"].encode()  # public: what an attacker could use as an HMAC secret
    jwts = {
        "desk": provider.token(almere_role="engineer", sub="desk-1"),
        "garage": provider.token(almere_role="operator", almere_subject="op-a"),
        "expired": provider.token(almere_role="engineer", lifetime_s=-120),
        "audience": provider.token(almere_role="engineer", aud="another-app"),
        "issuer": provider.token(almere_role="engineer", iss="https://idp.example"),
        "forged": provider.token(almere_role="engineer", key=other),
        "unknown-key": provider.token(almere_role="engineer", kid="k9", key=other),
        "no-role": provider.token(),
        "bad-role": provider.token(almere_role="root"),
        "no-exp": provider.token(almere_role="engineer", exp=None),
        "hs256": jwt.encode({"iss": provider.url, "aud": AUDIENCE, "sub": "x", "almere_role": "engineer",
                             "exp": int(time.time()) + 60}, published, "HS256", headers={"kid": "k1"}),
        "none": jwt.encode({"iss": provider.url, "aud": AUDIENCE, "sub": "x", "almere_role": "engineer",
                            "exp": int(time.time()) + 60}, "", "none", headers={"kid": "k1"}),
    }  # fmt: skip
    async with grpc.aio.insecure_channel(address) as channel:
        client = Parking(channel, {**tokens, **jwts})
        answers = {caller: await _call(client, caller) for caller in jwts}
        assert answers.pop("desk") == (grpc.StatusCode.OK, "")
        assert answers.pop("garage") == (
            grpc.StatusCode.PERMISSION_DENIED,
            "role operator:op-a may not CreateFacility (allowed: engineer)",
        ), "the role comes from the claims"
        assert {caller: code for caller, (code, _) in answers.items()} == dict.fromkeys(
            answers, grpc.StatusCode.UNAUTHENTICATED
        )
        assert answers["expired"][1] == "the bearer token has expired; ask for a new one"
        assert answers["audience"][1] == f"the bearer token is not meant for {AUDIENCE}"
        assert answers["issuer"][1] == f"the bearer token is not issued by {provider.url}"
        assert answers["forged"][1] == "the bearer token's signature does not verify"
        assert answers["unknown-key"][1] == "the identity provider has no signing key 'k9'"
        assert answers["no-role"][1] == "the bearer token has no almere_role claim"
        assert answers["bad-role"][1].startswith("the bearer token's almere_role claim: unknown role 'root'")
        assert "exp" in answers["no-exp"][1]
        assert "algorithm 'HS256' is not accepted" in answers["hs256"][1]
        assert "algorithm 'none' is not accepted" in answers["none"][1]
        # Nothing the refused tokens asked for was written; the tokens file's callers still work.
        listed = await client.as_("engineer").ListFacilities(pb.ListFacilitiesRequest())
        assert [f.name for f in listed.facilities] == ["facilities/g-desk"]
    assert provider.jwks_reads == 1, "a made-up key id costs one fetch per refresh interval, not one per call"


async def test_the_verifier_follows_key_rotation_and_withdrawal(provider: Provider) -> None:
    verifier = OidcVerifier(
        OidcConfig(issuer=provider.url, audience=AUDIENCE, refresh_min_seconds=0.0, max_age_seconds=0.3)
    )
    police = provider.token(almere_role="police", sub="officer-7")
    assert await verifier.identify(police) == Identity("officer-7", Role.POLICE)

    provider.add_key("k2", curve=True)  # a new key: its tokens are accepted at once (unknown kid -> fetch)
    rotated = provider.token(kid="k2", almere_role="operator:op-b", sub="garage-b")
    assert await verifier.identify(rotated) == Identity("garage-b", Role.OPERATOR, "op-b")

    del provider.keys["k1"]  # withdrawn: refused once the key set is older than max_age_seconds
    await asyncio.sleep(0.35)
    with pytest.raises(TokenRefused, match="no signing key 'k1'"):
        await verifier.identify(police)

    provider.down = True  # the provider unreachable: the keys read before keep working
    await asyncio.sleep(0.35)
    assert await verifier.identify(rotated) == Identity("garage-b", Role.OPERATOR, "op-b")
