"""Throw-away X.509 material for TLS tests, generated with ``cryptography`` only.

Certificates satisfy OpenSSL's X509_STRICT checks (SKI/AKI present, critical key usage on the CA),
because newer Pythons enable strict verification by default and the tests must not depend on that.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Short validity keeps leaked test material useless; the backdate tolerates small clock skew.
VALIDITY = dt.timedelta(days=2)
BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CA:
    """A self-signed CA whose files can be handed to a TLS client as its trust root."""

    name: str
    cert_path: Path
    key_path: Path
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "ca"


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(cert: x509.Certificate, path: Path) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _validity() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.timezone.utc)
    return now - BACKDATE, now + VALIDITY


def make_ca(directory: Path | str, name: str = "signgate test CA") -> CA:
    """Create a P-256 CA; files are named after ``name`` so several CAs can share a directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    not_before, not_after = _validity()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    stem = _slug(name)
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    _write_cert(cert, cert_path)
    _write_key(key, key_path)
    return CA(name=name, cert_path=cert_path, key_path=key_path, cert=cert, key=key)


def make_unrelated_ca(directory: Path | str) -> CA:
    """A CA that signed nothing the tests serve: trusting only it must make TLS fail."""
    return make_ca(directory, name="signgate unrelated CA")


def _san(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def make_server_cert(
    ca: CA,
    directory: Path | str,
    hosts: Iterable[str] = ("127.0.0.1", "localhost"),
) -> tuple[Path, Path]:
    """Issue a serverAuth leaf for ``hosts`` (IPs become IP SANs, names DNS SANs)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    hosts = tuple(hosts)
    if not hosts:
        raise ValueError("a server certificate needs at least one host")
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity()
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(hosts), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    stem = f"server-{_slug(hosts[0])}"
    cert_path, key_path = directory / f"{stem}.crt", directory / f"{stem}.key"
    _write_cert(cert, cert_path)
    _write_key(key, key_path)
    return cert_path, key_path
