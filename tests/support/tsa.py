"""A test RFC 3161 timestamp authority: OpenSSL's own TSA (`openssl ts -reply`) with a certificate
from a throw-away root, so the responses are those of a real, independent implementation.

`stamp(data)` returns the DER TimeStampResp over SHA-256(data), time-stamped now, as sigstore
bundles carry it (`rfc3161Timestamps[].signedTimestamp`) and cosign's legacy layout does
(`dev.sigstore.cosign/rfc3161timestamp`).
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class TestTSA:
    __test__ = False
    directory: Path
    certificate: x509.Certificate
    root: x509.Certificate

    def stamp(self, data: bytes) -> bytes:
        (self.directory / "data").write_bytes(data)
        subprocess.run(
            ["openssl", "ts", "-query", "-data", "data", "-sha256", "-cert", "-no_nonce", "-out", "request.tsq"],
            cwd=self.directory, check=True, capture_output=True,
        )
        subprocess.run(
            ["openssl", "ts", "-reply", "-config", "tsa.cnf", "-queryfile", "request.tsq", "-out", "response.tsr"],
            cwd=self.directory, check=True, capture_output=True,
        )
        return (self.directory / "response.tsr").read_bytes()


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "signgate tests"), x509.NameAttribute(NameOID.COMMON_NAME, common)])


def new_tsa(directory: Path) -> TestTSA:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not on PATH: the test TSA is OpenSSL's `openssl ts -reply`")
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.timezone.utc)
    root_key, tsa_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    root = (
        x509.CertificateBuilder().subject_name(_name("tsa root")).issuer_name(_name("tsa root"))
        .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    certificate = (
        x509.CertificateBuilder().subject_name(_name("tsa")).issuer_name(root.subject)
        .public_key(tsa_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(tsa_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA256())
    )
    (directory / "tsa.key").write_bytes(
        tsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    (directory / "tsa.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (directory / "serial").write_text("01\n")
    (directory / "tsa.cnf").write_text(
        "[ tsa ]\ndefault_tsa = signgate_tsa\n\n[ signgate_tsa ]\n"
        f"serial = {directory / 'serial'}\nsigner_cert = {directory / 'tsa.pem'}\nsigner_key = {directory / 'tsa.key'}\n"
        "signer_digest = sha256\ndefault_policy = 1.3.6.1.4.1.57264.2\ndigests = sha256\n"
        "accuracy = secs:1\nordering = no\ntsa_name = no\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n"
    )
    return TestTSA(directory, certificate, root)
