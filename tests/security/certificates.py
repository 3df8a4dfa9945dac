"""A CA and the certificates it signs, made in the test (the `cryptography` package): the services'
(their TLS settings, for gRPC and NATS alike) and callers' own, or another CA's."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

SERVER_NAME = "services.almere.test"  # the name in the services' certificate (they are reached by IP)
CA_NAME = "almere test CA"
Signer = tuple[str, ec.EllipticCurvePrivateKey]  # a CA: its name and key


def certificate(subject: str, key: ec.EllipticCurvePrivateKey, *, issuer: Signer | None = None) -> x509.Certificate:
    """Self-signed (a CA) without `issuer`, else signed by it for SERVER_NAME."""
    now = dt.datetime.now(dt.UTC)
    issuer_name, signer = issuer or (subject, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
    return builder.sign(signer, hashes.SHA256())


def write_pem(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def new_ca() -> Signer:
    return ("another CA", ec.generate_private_key(ec.SECP256R1()))


def issue(folder: Path, name: str, issuer: Signer) -> tuple[Path, Path]:
    """A certificate for `name` signed by `issuer`, and its key: (certificate file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate(name, key, issuer=issuer)
    return (
        write_pem(folder / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)),
        write_pem(folder / f"{name}.key", private_pem(key)),
    )


def deployment_tls(folder: Path) -> tuple[dict[str, object], Signer]:
    """A CA, and a server certificate it signed: the TLS settings every service of a test gets, and
    the CA, to sign callers' certificates with."""
    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate(CA_NAME, ca_key)
    server = certificate(SERVER_NAME, server_key, issuer=(CA_NAME, ca_key))
    settings = {
        "tls_ca_file": write_pem(folder / "ca.pem", ca.public_bytes(serialization.Encoding.PEM)),
        "tls_cert_file": write_pem(folder / "server.pem", server.public_bytes(serialization.Encoding.PEM)),
        "tls_key_file": write_pem(folder / "server.key", private_pem(server_key)),
        "tls_server_name": SERVER_NAME,
    }
    return settings, (CA_NAME, ca_key)
