"""A development certificate authority for mutual TLS between nodes (`raftfsm certs`).

Each node certificate carries the node id as its common name and as a DNS
subject-alternative name: the TCP transport accepts a node's hello only if the id in it
is one its verified certificate names, so a stolen key of node A cannot speak as node B.
These files are for development and tests; production clusters use their own PKI with
the same naming rule.

Needs the ``cryptography`` package (``pip install cryptography``).
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from runtime.transport.tcp import TlsConfig

__all__ = ["make_dev_certs"]

CA_VALIDITY = datetime.timedelta(days=3650)
NODE_VALIDITY = datetime.timedelta(days=825)
"""The longest leaf lifetime mainstream TLS clients accept."""


def _crypto() -> Any:
    """The cryptography modules, imported late so the rest of raftfsm works without them."""
    try:
        from cryptography import x509  # type: ignore[import-not-found, unused-ignore]
        from cryptography.hazmat.primitives import (  # type: ignore[import-not-found, unused-ignore]
            hashes,
            serialization,
        )
        from cryptography.hazmat.primitives.asymmetric import (  # type: ignore[import-not-found, unused-ignore]
            ec,
        )
        from cryptography.x509.oid import (  # type: ignore[import-not-found, unused-ignore]
            ExtendedKeyUsageOID,
            NameOID,
        )
    except ImportError as exc:
        raise RuntimeError(
            "making certificates needs the 'cryptography' package: pip install cryptography"
        ) from exc

    return SimpleNamespace(
        x509=x509, hashes=hashes, serialization=serialization, ec=ec,
        NameOID=NameOID, ExtendedKeyUsageOID=ExtendedKeyUsageOID,
    )


def _write(path: Path, data: bytes, private: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def _key_pem(crypto: Any, key: Any) -> bytes:
    s = crypto.serialization
    return key.private_bytes(  # type: ignore[no-any-return]
        s.Encoding.PEM, s.PrivateFormat.PKCS8, s.NoEncryption()
    )


def _load_or_make_ca(crypto: Any, out: Path, now: datetime.datetime) -> tuple[Any, Any]:
    """Reuse an existing CA so that certificates for nodes added later still verify."""
    x509, s = crypto.x509, crypto.serialization
    ca_pem, ca_key = out / "ca.pem", out / "ca.key"
    if ca_pem.exists() and ca_key.exists():
        return (x509.load_pem_x509_certificate(ca_pem.read_bytes()),
                s.load_pem_private_key(ca_key.read_bytes(), password=None))
    key = crypto.ec.generate_private_key(crypto.ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(crypto.NameOID.COMMON_NAME, "raftfsm development CA")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, crypto.hashes.SHA256())
    )
    _write(ca_key, _key_pem(crypto, key), private=True)
    _write(ca_pem, certificate.public_bytes(s.Encoding.PEM), private=False)
    return certificate, key


def _node_certificate(crypto: Any, node_id: str, ca: Any, ca_key: Any, key: Any,
                      now: datetime.datetime) -> Any:
    x509 = crypto.x509
    eku = crypto.ExtendedKeyUsageOID
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(crypto.NameOID.COMMON_NAME, node_id)]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + NODE_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(node_id)]), critical=False)
        # Every node is both a server (peers dial it) and a client (it dials peers).
        .add_extension(x509.ExtendedKeyUsage([eku.SERVER_AUTH, eku.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, crypto.hashes.SHA256())
    )


def make_dev_certs(out_dir: str | os.PathLike[str], node_ids: list[str]) -> dict[str, TlsConfig]:
    """Write ca.pem, ca.key, <id>.pem and <id>.key into `out_dir` and return each node's
    TlsConfig. An existing CA in `out_dir` is reused; node files are rewritten."""
    crypto = _crypto()
    out = Path(out_dir)
    now = datetime.datetime.now(datetime.UTC)
    ca, ca_key = _load_or_make_ca(crypto, out, now)
    configs = {}
    for node_id in node_ids:
        if not node_id or "/" in node_id or node_id.startswith("."):
            raise ValueError(f"node id {node_id!r} cannot name a certificate file")
        if node_id == "ca":
            raise ValueError("node id 'ca' would overwrite the CA files")
        key = crypto.ec.generate_private_key(crypto.ec.SECP256R1())
        certificate = _node_certificate(crypto, node_id, ca, ca_key, key, now)
        _write(out / f"{node_id}.key", _key_pem(crypto, key), private=True)
        _write(out / f"{node_id}.pem", certificate.public_bytes(crypto.serialization.Encoding.PEM),
               private=False)
        configs[node_id] = TlsConfig(
            ca_file=str(out / "ca.pem"), cert_file=str(out / f"{node_id}.pem"),
            key_file=str(out / f"{node_id}.key"),
        )
    return configs
