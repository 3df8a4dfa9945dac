from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.certificates import Signer, deployment_tls


@pytest.fixture
def deployment_ca(tmp_path: Path) -> tuple[dict[str, object], Signer]:
    """The deployment's TLS settings (a CA and a server certificate it signed) and the CA."""
    return deployment_tls(tmp_path)


@pytest.fixture
def tls(deployment_ca: tuple[dict[str, object], Signer]) -> dict[str, object]:
    """The TLS settings every service of the test gets (tls_ca_file, tls_cert_file, tls_key_file,
    tls_server_name)."""
    return deployment_ca[0]


@pytest.fixture
def ca(deployment_ca: tuple[dict[str, object], Signer]) -> Signer:
    """The deployment's CA, to sign callers' certificates with (tests.security.certificates.issue)."""
    return deployment_ca[1]
