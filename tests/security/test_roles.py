"""The role table in docs/roles.md is the rules the servicers check, and every RPC has one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from apps import partner_reads
from apps.role_table import rules

ROOT = Path(__file__).resolve().parents[2]


def test_every_rpc_of_the_contract_has_an_access_rule() -> None:
    found = rules()
    assert len(found) >= 40
    assert [rpc for rpc, rule in found.items() if rule is None] == []


def test_every_rpc_of_the_contract_says_what_it_does_with_partners_data() -> None:
    """A new read path cannot land without its rule for partners' data (apps/partner_reads.py)."""
    contract = set(rules())
    assert sorted(contract - set(partner_reads.RULES)) == [], "add each new RPC's rule to apps/partner_reads.py"
    assert sorted(set(partner_reads.RULES) - contract) == [], "apps/partner_reads.py names RPCs the contract lacks"


def test_docs_roles_is_the_generated_table() -> None:
    generated = subprocess.run(
        [sys.executable, "-m", "apps.cli", "roles"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    assert (ROOT / "docs" / "roles.md").read_text() == generated, "regenerate: almere roles > docs/roles.md"
