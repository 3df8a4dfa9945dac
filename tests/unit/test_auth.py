"""Unit tests of roles, the token store and token issuing in services/common/auth.py."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from services.common.auth import Identity, Role, TokenStore, issue_token, parse_role, token_digest


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


@pytest.mark.parametrize("text", ["engineer:x", "police:garage-a", "sim:1"])
def test_parse_role_other_roles_take_no_id(text: str) -> None:
    name = text.partition(":")[0]
    with pytest.raises(ValueError, match=f"^role {name} takes no id$"):
        parse_role(text)


@pytest.mark.parametrize("text", ["admin", "Engineer", "", "operators:a"])
def test_parse_role_unknown(text: str) -> None:
    name = text.partition(":")[0]
    expected = f"unknown role {name!r}; expected one of engineer, operator, police, fire, ems, optimizer, sim"
    with pytest.raises(ValueError) as err:
        parse_role(text)
    assert str(err.value) == expected


def test_identity_role_name() -> None:
    assert Identity("c", Role.OPERATOR, "garage-a").role_name == "operator:garage-a"
    assert Identity("c", Role.POLICE).role_name == "police"


def test_token_digest_is_sha256_hex() -> None:
    assert token_digest("secret") == hashlib.sha256(b"secret").hexdigest()
    assert len(token_digest("secret")) == 64


def _tokens_json(*entries: tuple[str, str, str]) -> str:
    """Entries of (caller, role, token)."""
    return json.dumps({"tokens": [{"caller": c, "role": r, "sha256": token_digest(t)} for c, r, t in entries]})


def test_token_store_from_json_identifies_by_token() -> None:
    store = TokenStore.from_json(_tokens_json(("counter", "operator:garage-a", "tok-1"), ("desk", "engineer", "tok-2")))
    assert len(store) == 2
    assert store.identify("tok-1") == Identity("counter", Role.OPERATOR, "garage-a")
    assert store.identify("tok-2") == Identity("desk", Role.ENGINEER, None)
    assert store.identify("tok-3") is None
    assert store.identify("") is None
    # The digest itself is not a usable token.
    assert store.identify(token_digest("tok-1")) is None


def test_token_store_from_json_without_tokens_is_empty() -> None:
    assert len(TokenStore.from_json("{}")) == 0
    assert TokenStore.from_json('{"tokens": []}').identify("anything") is None


def test_token_store_from_json_rejects_bad_role() -> None:
    with pytest.raises(ValueError, match="unknown role 'root'"):
        TokenStore.from_json(_tokens_json(("x", "root", "tok")))


def test_token_store_load_merges_file_and_inline(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(_tokens_json(("file-caller", "police", "file-tok"), ("shared", "fire", "shared-tok")))
    inline = _tokens_json(("inline-caller", "sim", "inline-tok"), ("shared-inline", "ems", "shared-tok"))
    store = TokenStore.load(path, inline)
    assert len(store) == 3
    assert store.identify("file-tok") == Identity("file-caller", Role.POLICE)
    assert store.identify("inline-tok") == Identity("inline-caller", Role.SIM)
    # The same token in both: the inline entry wins.
    assert store.identify("shared-tok") == Identity("shared-inline", Role.EMS)
    assert store.identify("other") is None


def test_token_store_load_either_source(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text(_tokens_json(("a", "engineer", "tok-a")))
    assert TokenStore.load(path, None).identify("tok-a") == Identity("a", Role.ENGINEER)
    inline_only = TokenStore.load(None, _tokens_json(("b", "optimizer", "tok-b")))
    assert inline_only.identify("tok-b") == Identity("b", Role.OPTIMIZER)
    assert inline_only.identify("tok-a") is None
    assert len(TokenStore.load(None, None)) == 0
    assert len(TokenStore.load(None, "")) == 0


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
    identity = TokenStore.load(path, None).identify(token)
    assert identity == Identity("garage-centrum-counter", Role.OPERATOR, "garage-centrum")


def test_issue_token_reissue_replaces_the_callers_entry(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    other = issue_token(path, "desk", "engineer")
    first = issue_token(path, "counter", "operator:garage-a")
    second = issue_token(path, "counter", "operator:garage-b")
    assert first != second
    entries = json.loads(path.read_text())["tokens"]
    assert [(e["caller"], e["role"]) for e in entries] == [("desk", "engineer"), ("counter", "operator:garage-b")]
    store = TokenStore.load(path, None)
    assert len(store) == 2
    assert store.identify(first) is None
    assert store.identify(second) == Identity("counter", Role.OPERATOR, "garage-b")
    assert store.identify(other) == Identity("desk", Role.ENGINEER)


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
    assert TokenStore.load(path, None).identify(token) == Identity("desk", Role.ENGINEER)
