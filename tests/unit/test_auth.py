"""Unit tests of roles, the token store and token issuing in services/common/auth.py."""

from __future__ import annotations

import hashlib
import json
import logging
import stat
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.common.auth import (
    Identity,
    Role,
    TokenStore,
    issue_token,
    parse_duration,
    parse_role,
    revoke_token,
    token_digest,
)


@pytest.mark.parametrize(
    ("text", "role"),
    [
        ("engineer", Role.ENGINEER),
        ("police", Role.POLICE),
        ("fire", Role.FIRE),
        ("ems", Role.EMS),
        ("optimizer", Role.OPTIMIZER),
        ("sim", Role.SIM),
    ],
)
def test_parse_role_without_id(text: str, role: Role) -> None:
    assert parse_role(text) == (role, None)


def test_parse_role_operator_carries_its_id() -> None:
    assert parse_role("operator:garage-a") == (Role.OPERATOR, "garage-a")


@pytest.mark.parametrize("text", ["operator", "operator:"])
def test_parse_role_operator_needs_id(text: str) -> None:
    with pytest.raises(ValueError, match=r"^role operator needs an operator id: operator:<id>$"):
        parse_role(text)


def test_parse_role_service_names_the_service() -> None:
    assert parse_role("service:parking") == (Role.SERVICE, "parking")
    assert Identity("parking", Role.SERVICE, "parking").role_name == "service:parking"
    for text in ("service", "service:"):
        with pytest.raises(ValueError, match=r"^role service needs a service name: service:<id>$"):
            parse_role(text)


def test_parse_role_partner_names_the_partner() -> None:
    assert parse_role("partner:securitas") == (Role.PARTNER, "securitas")
    with pytest.raises(ValueError, match=r"^role partner needs a partner id: partner:<id>$"):
        parse_role("partner")


@pytest.mark.parametrize("text", ["engineer:x", "police:garage-a", "sim:1"])
def test_parse_role_other_roles_take_no_id(text: str) -> None:
    name = text.partition(":")[0]
    with pytest.raises(ValueError, match=f"^role {name} takes no id$"):
        parse_role(text)


@pytest.mark.parametrize("text", ["admin", "Engineer", "", "operators:a"])
def test_parse_role_unknown(text: str) -> None:
    name = text.partition(":")[0]
    expected = (
        f"unknown role {name!r}; expected one of engineer, operator, police, fire, ems, optimizer, sim, service, "
        "public, partner"
    )
    with pytest.raises(ValueError) as err:
        parse_role(text)
    assert str(err.value) == expected


def test_identity_role_name() -> None:
    assert Identity("c", Role.OPERATOR, "garage-a").role_name == "operator:garage-a"
    assert Identity("c", Role.POLICE).role_name == "police"


def test_token_digest_is_sha256_hex() -> None:
    assert token_digest("secret") == hashlib.sha256(b"secret").hexdigest()
    assert len(token_digest("secret")) == 64


def _tokens_json(*entries: tuple[str, str, str], expires: str | None = None) -> str:
    """Entries of (caller, role, token), all expiring at `expires` when given."""
    extra = {"expires": expires} if expires else {}
    return json.dumps({"tokens": [{"caller": c, "role": r, "sha256": token_digest(t), **extra} for c, r, t in entries]})


def _identify(store: TokenStore, token: str) -> Identity | None:
    entry = store.lookup(token)
    assert entry is None or not entry.expired()
    return entry.identity if entry else None


def test_token_store_identifies_by_token() -> None:
    store = TokenStore(inline=_tokens_json(("counter", "operator:garage-a", "tok-1"), ("desk", "engineer", "tok-2")))
    assert len(store) == 2
    assert _identify(store, "tok-1") == Identity("counter", Role.OPERATOR, "garage-a")
    assert _identify(store, "tok-2") == Identity("desk", Role.ENGINEER, None)
    assert store.lookup("tok-3") is None
    assert store.lookup("") is None
    # The digest itself is not a usable token.
    assert store.lookup(token_digest("tok-1")) is None


def test_token_store_without_tokens_is_empty() -> None:
    assert len(TokenStore(inline="{}")) == 0
    assert TokenStore(inline='{"tokens": []}').lookup("anything") is None


def test_token_store_rejects_bad_role() -> None:
    with pytest.raises(ValueError, match="unknown role 'root'"):
        TokenStore(inline=_tokens_json(("x", "root", "tok")))


def test_token_store_merges_file_and_inline(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(_tokens_json(("file-caller", "police", "file-tok"), ("shared", "fire", "shared-tok")))
    inline = _tokens_json(("inline-caller", "sim", "inline-tok"), ("shared-inline", "ems", "shared-tok"))
    store = TokenStore(path, inline)
    assert len(store) == 3
    assert _identify(store, "file-tok") == Identity("file-caller", Role.POLICE)
    assert _identify(store, "inline-tok") == Identity("inline-caller", Role.SIM)
    # The same token in both: the inline entry wins.
    assert _identify(store, "shared-tok") == Identity("shared-inline", Role.EMS)
    assert store.lookup("other") is None


def test_token_store_either_source(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(_tokens_json(("a", "engineer", "tok-a")))
    assert _identify(TokenStore(path), "tok-a") == Identity("a", Role.ENGINEER)
    inline_only = TokenStore(inline=_tokens_json(("b", "optimizer", "tok-b")))
    assert _identify(inline_only, "tok-b") == Identity("b", Role.OPTIMIZER)
    assert inline_only.lookup("tok-a") is None
    assert len(TokenStore()) == 0
    assert len(TokenStore(inline="")) == 0


def test_token_store_needs_its_file_at_start(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        TokenStore(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError):
        TokenStore(tmp_path / "bad.json")


def test_token_store_keeps_no_reference_to_the_token() -> None:
    store = TokenStore(inline=_tokens_json(("desk", "engineer", "tok-1")))
    token = "".join(["tok", "-1"])  # a string object of its own, referenced only here
    before = sys.getrefcount(token)
    for _ in range(3):
        assert _identify(store, token) == Identity("desk", Role.ENGINEER)
    assert sys.getrefcount(token) == before


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_store_rereads_a_changed_file_at_most_once_a_second(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    old = issue_token(path, "desk", "engineer")
    clock = _Clock()
    store = TokenStore(path, clock=clock)
    new = issue_token(path, "counter", "operator:garage-a")
    assert store.lookup(new) is None  # not looked at again within the second
    clock.now += TokenStore.RECHECK_SECONDS
    assert _identify(store, new) == Identity("counter", Role.OPERATOR, "garage-a")
    assert revoke_token(path, "desk")
    clock.now += 0.5
    assert _identify(store, old) == Identity("desk", Role.ENGINEER)
    clock.now += 0.5
    assert store.lookup(old) is None
    assert len(store) == 1


def test_token_store_keeps_its_tokens_when_the_file_breaks_and_drops_them_when_it_goes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "tokens.json"
    token = issue_token(path, "desk", "engineer")
    clock = _Clock()
    store = TokenStore(path, inline=_tokens_json(("inline", "sim", "inline-tok")), clock=clock)
    path.write_text('{"tokens": [{"caller": "half-written"')
    clock.now += 1
    with caplog.at_level(logging.ERROR, logger="services.common.auth"):
        assert _identify(store, token) == Identity("desk", Role.ENGINEER)
        clock.now += 1
        assert _identify(store, token) == Identity("desk", Role.ENGINEER)
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [f"tokens file {path} unreadable"]  # once
    path.unlink()
    clock.now += 1
    assert store.lookup(token) is None
    assert _identify(store, "inline-tok") == Identity("inline", Role.SIM)  # inline tokens stay


def test_token_store_tells_an_expired_token_from_an_unknown_one() -> None:
    past = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    store = TokenStore(
        inline=json.dumps(
            {
                "tokens": [
                    {"caller": "old", "role": "police", "sha256": token_digest("tok-old"), "expires": past},
                    {
                        "caller": "new",
                        "role": "fire",
                        "sha256": token_digest("tok-new"),
                        "expires": "2999-01-01T00:00Z",
                    },
                    {"caller": "ever", "role": "ems", "sha256": token_digest("tok-ever")},
                ]
            }
        )
    )
    old = store.lookup("tok-old")
    assert old is not None and old.expired() and old.identity == Identity("old", Role.POLICE)
    assert _identify(store, "tok-new") == Identity("new", Role.FIRE)
    assert _identify(store, "tok-ever") == Identity("ever", Role.EMS)
    assert store.lookup("tok-other") is None


def test_token_store_refuses_an_expiry_without_time_zone() -> None:
    with pytest.raises(ValueError, match=r"^the expiry of caller x needs a time zone, e\.g\. 2027-01-01T00:00:00Z$"):
        TokenStore(inline=_tokens_json(("x", "sim", "tok"), expires="2027-01-01T00:00:00"))


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * 86400), ("12h", 12 * 3600), ("15m", 900), ("90s", 90), ("1d", 86400)]
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "d", "30", "0d", "-1d", "1.5h", "3y", "1 d"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"^expected a duration like 30d, 12h, 15m or 90s, not "):
        parse_duration(text)


def test_issue_token_creates_private_file_with_digest_only(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "tokens.json"
    token = issue_token(path, "garage-centrum-counter", "operator:garage-centrum")
    assert len(token) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert token not in text
    assert json.loads(text) == {
        "tokens": [
            {
                "caller": "garage-centrum-counter",
                "role": "operator:garage-centrum",
                "sha256": hashlib.sha256(token.encode()).hexdigest(),
            }
        ]
    }
    identity = _identify(TokenStore(path), token)
    assert identity == Identity("garage-centrum-counter", Role.OPERATOR, "garage-centrum")


def test_issue_token_with_an_expiry(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    before = datetime.now(UTC).replace(microsecond=0)
    token = issue_token(path, "visitor", "sim", expires_in=timedelta(days=30))
    (entry,) = json.loads(path.read_text())["tokens"]
    expires = datetime.fromisoformat(entry["expires"])
    assert entry["expires"].endswith("Z")
    assert before + timedelta(days=30) <= expires <= datetime.now(UTC) + timedelta(days=30)
    found = TokenStore(path).lookup(token)
    assert found is not None and not found.expired() and found.expires_at == expires.timestamp()


def test_issue_token_reissue_replaces_the_callers_entry(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    other = issue_token(path, "desk", "engineer")
    first = issue_token(path, "counter", "operator:garage-a")
    second = issue_token(path, "counter", "operator:garage-b")
    assert first != second
    entries = json.loads(path.read_text())["tokens"]
    assert [(e["caller"], e["role"]) for e in entries] == [("desk", "engineer"), ("counter", "operator:garage-b")]
    store = TokenStore(path)
    assert len(store) == 2
    assert store.lookup(first) is None
    assert _identify(store, second) == Identity("counter", Role.OPERATOR, "garage-b")
    assert _identify(store, other) == Identity("desk", Role.ENGINEER)


@pytest.mark.parametrize("role", ["admin", "operator", "police:x"])
def test_issue_token_bad_role_raises_and_writes_nothing(tmp_path: Path, role: str) -> None:
    path = tmp_path / "tokens.json"
    with pytest.raises(ValueError):
        issue_token(path, "caller", role)
    assert not path.exists()


def test_issue_token_bad_role_keeps_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token = issue_token(path, "desk", "engineer")
    before = path.read_text()
    with pytest.raises(ValueError, match="unknown role 'admin'"):
        issue_token(path, "desk", "admin")
    assert path.read_text() == before
    assert _identify(TokenStore(path), token) == Identity("desk", Role.ENGINEER)


def test_revoke_token_removes_only_that_caller(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    desk = issue_token(path, "desk", "engineer")
    counter = issue_token(path, "counter", "operator:garage-a")
    assert revoke_token(path, "counter")
    assert [e["caller"] for e in json.loads(path.read_text())["tokens"]] == ["desk"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store = TokenStore(path)
    assert store.lookup(counter) is None
    assert _identify(store, desk) == Identity("desk", Role.ENGINEER)


def test_revoke_token_of_an_unknown_caller_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    assert not revoke_token(path, "nobody")
    assert not path.exists()
    issue_token(path, "desk", "engineer")
    before = path.read_text(), path.stat().st_ino
    assert not revoke_token(path, "nobody")
    assert (path.read_text(), path.stat().st_ino) == before
