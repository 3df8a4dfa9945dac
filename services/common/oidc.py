"""Identities from the city's identity provider: OAuth2/OIDC JWT bearer tokens.

A token is accepted when its signature verifies against a key of the provider's JWKS (asymmetric
algorithms only: a symmetric `oct` key or `alg: none` is never a way in), its issuer and audience are
the configured ones and it has not expired (30 s leeway for clocks). The role comes from a claim
(default `almere_role`, e.g. `operator:garage-a`, or `operator` with the id in `almere_subject`), the
caller's name from `sub`.

Keys are fetched (httpx, off the call path's blocking I/O) when a token names a key id not yet known,
at most once per `refresh_min_seconds` so a flood of made-up key ids costs one fetch, and again
when the set is older than `max_age_seconds` so a key the provider withdrew stops working. Verified
tokens are remembered by digest until they expire or the keys change: a signature check costs
tens of microseconds, a dictionary lookup well under one.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from services.common.auth import Identity, parse_role
from services.common.config import Settings

log = logging.getLogger(__name__)

# What a provider signs with; HS* would let anybody holding a public JWKS entry mint tokens.
ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"})
LEEWAY_SECONDS = 30
CACHE_SIZE = 4096


def looks_like_jwt(token: str) -> bool:
    """A compact JWS: three base64url parts, the header a JSON object (`eyJ` is `{"`)."""
    return token.startswith("eyJ") and token.count(".") == 2


class TokenRefused(Exception):
    """Why a JWT is not accepted; `reason` is short for logs and metrics, str() the client's message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, kw_only=True)
class OidcConfig:
    issuer: str
    audience: str
    # Default: the jwks_uri of the issuer's /.well-known/openid-configuration.
    jwks_url: str | None = None
    role_claim: str = "almere_role"
    subject_claim: str = "almere_subject"
    refresh_min_seconds: float = 10.0
    max_age_seconds: float = 300.0
    # The provider's TLS roots (a private CA's PEM file); default: the system's.
    ca_file: str | None = None


class OidcVerifier:
    def __init__(self, config: OidcConfig) -> None:
        self.config = config
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._fetching = asyncio.Lock()
        self._jwks_url = config.jwks_url
        self._verified: OrderedDict[bytes, tuple[Identity, float]] = OrderedDict()

    async def identify(self, token: str) -> Identity:
        """The caller `token` names; TokenRefused when it is not valid."""
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        if known is not None and time.time() < known[1] + LEEWAY_SECONDS:
            self._verified.move_to_end(digest)
            if time.monotonic() - self._fetched_at < self.config.max_age_seconds:
                return known[0]
        key = await self._key_for(token)
        claims = self._verify(token, key)
        identity = self._identity(claims)
        self._verified[digest] = (identity, float(claims["exp"]))
        if len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)
        return identity

    async def _key_for(self, token: str) -> jwt.PyJWK:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise TokenRefused("malformed", "the bearer token is not a well-formed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in ASYMMETRIC:
            raise TokenRefused("algorithm", f"JWT algorithm {alg!r} is not accepted; sign with RS256, ES256 or EdDSA")
        age = time.monotonic() - self._fetched_at
        if age >= self.config.max_age_seconds or (kid not in self._keys and age >= self.config.refresh_min_seconds):
            await self._refresh()
        key = self._keys.get(kid) if kid else next(iter(self._keys.values()), None) if len(self._keys) == 1 else None
        if key is None:
            raise TokenRefused("unknown-key", f"the identity provider has no signing key {kid!r}")
        if key.algorithm_name != alg:
            raise TokenRefused("algorithm", f"key {kid!r} signs with {key.algorithm_name}, the token says {alg}")
        return key

    async def _refresh(self) -> None:
        async with self._fetching:
            if time.monotonic() - self._fetched_at < self.config.refresh_min_seconds:
                return  # another call fetched while this one waited
            try:
                async with httpx.AsyncClient(timeout=5.0, verify=self.config.ca_file or True) as http:
                    if self._jwks_url is None:
                        discovery = await http.get(f"{self.config.issuer.rstrip('/')}/.well-known/openid-configuration")
                        discovery.raise_for_status()
                        self._jwks_url = str(discovery.json()["jwks_uri"])
                    answer = await http.get(self._jwks_url)
                    answer.raise_for_status()
                    keys = jwt.PyJWKSet.from_dict(answer.json())
            except (httpx.HTTPError, ValueError, KeyError, jwt.PyJWKSetError) as err:
                # The keys read before stay; the next try waits refresh_min_seconds.
                log.error("cannot read the identity provider's keys from %s: %s", self._jwks_url or "discovery", err)
                self._fetched_at = time.monotonic() - self.config.max_age_seconds + self.config.refresh_min_seconds
                return
            self._keys = {k.key_id or "": k for k in keys if k.algorithm_name in ASYMMETRIC}
            self._fetched_at = time.monotonic()
            self._verified.clear()  # a withdrawn key's tokens must be checked again
            log.info("identity provider keys read: %s", ", ".join(sorted(self._keys)) or "none usable")

    def _verify(self, token: str, key: jwt.PyJWK) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm_name],
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRefused("expired", "the bearer token has expired; ask for a new one") from None
        except jwt.InvalidAudienceError:
            raise TokenRefused("audience", f"the bearer token is not meant for {self.config.audience}") from None
        except jwt.InvalidIssuerError:
            raise TokenRefused("issuer", f"the bearer token is not issued by {self.config.issuer}") from None
        except jwt.InvalidSignatureError:
            raise TokenRefused("signature", "the bearer token's signature does not verify") from None
        except jwt.PyJWTError as err:
            raise TokenRefused("invalid", f"invalid bearer token: {err}") from None

    def _identity(self, claims: dict[str, Any]) -> Identity:
        role_text = claims.get(self.config.role_claim)
        if not isinstance(role_text, str) or not role_text:
            raise TokenRefused("role", f"the bearer token has no {self.config.role_claim} claim")
        subject = claims.get(self.config.subject_claim)
        if ":" not in role_text and isinstance(subject, str) and subject:
            role_text = f"{role_text}:{subject}"
        try:
            role, role_subject = parse_role(role_text)
        except ValueError as err:
            raise TokenRefused("role", f"the bearer token's {self.config.role_claim} claim: {err}") from None
        return Identity(str(claims["sub"]), role, role_subject)


def verifier_from(settings: Settings) -> OidcVerifier | None:
    """The verifier the settings configure; None without an issuer. ValueError when half-configured."""
    if not settings.oidc_issuer:
        return None
    if not settings.oidc_audience:
        raise ValueError("ALMERE_OIDC_ISSUER needs ALMERE_OIDC_AUDIENCE: the audience tokens must name")
    return OidcVerifier(
        OidcConfig(
            issuer=settings.oidc_issuer,
            audience=settings.oidc_audience,
            jwks_url=settings.oidc_jwks_url,
            role_claim=settings.oidc_role_claim,
            subject_claim=settings.oidc_subject_claim,
            ca_file=str(settings.oidc_ca_file) if settings.oidc_ca_file else None,
        )
    )
