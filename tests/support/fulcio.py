"""A test certificate authority shaped like Fulcio, a test CT log, and trusted_root.json files.

- `TestFulcio`: a root and an intermediate CA; `issue()` makes a code-signing leaf for a given public
  key with Fulcio's OID extensions (OIDC issuer 1.3.6.1.4.1.57264.1.8 and the deprecated .1.1, the
  GitHub Actions trigger, repository and ref), a URI or e-mail SAN, and optionally an embedded SCT.
- `TestCTLog`: an ECDSA key that signs SCTs over the precertificate (RFC 6962 section 3.2), so the
  SCT verifies the way a real CT log's does; written from the RFC, not from signgate's checker.
- `trusted_root()`: a Sigstore `trusted_root.json` holding the CA chain, CT logs, transparency logs
  (tests/support/tlog.py) and no TSA.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

OIDC_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"
OIDC_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
GITHUB_TRIGGER = "1.3.6.1.4.1.57264.1.2"
GITHUB_REPOSITORY = "1.3.6.1.4.1.57264.1.5"
GITHUB_REF = "1.3.6.1.4.1.57264.1.6"
SCT_LIST_OID = "1.3.6.1.4.1.11129.2.4.2"
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _der_utf8(text: str) -> bytes:
    raw = text.encode()
    assert len(raw) < 128
    return bytes([0x0C, len(raw)]) + raw


def _der_octets(raw: bytes) -> bytes:
    if len(raw) < 128:
        return bytes([0x04, len(raw)]) + raw
    length = len(raw).to_bytes((len(raw).bit_length() + 7) // 8, "big")
    return bytes([0x04, 0x80 | len(length)]) + length + raw


def _spki(key: Any) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass
class TestCTLog:
    __test__ = False
    private: ec.EllipticCurvePrivateKey

    @property
    def log_id(self) -> bytes:
        return hashlib.sha256(_spki(self.private.public_key())).digest()

    def sct_list(self, precert_tbs: bytes, issuer_key: Any, when: dt.datetime) -> bytes:
        """The TLS-encoded SignedCertificateTimestampList holding one v1 SCT for a precertificate."""
        timestamp = int(when.timestamp() * 1000)
        signed = (
            b"\x00\x00" + timestamp.to_bytes(8, "big") + b"\x00\x01"
            + hashlib.sha256(_spki(issuer_key)).digest()
            + len(precert_tbs).to_bytes(3, "big") + precert_tbs
            + b"\x00\x00"
        )
        signature = self.private.sign(signed, ec.ECDSA(hashes.SHA256()))
        sct = b"\x00" + self.log_id + timestamp.to_bytes(8, "big") + b"\x00\x00" + b"\x04\x03" + len(signature).to_bytes(2, "big") + signature
        item = len(sct).to_bytes(2, "big") + sct
        return len(item).to_bytes(2, "big") + item


def new_ct_log() -> TestCTLog:
    return TestCTLog(ec.generate_private_key(ec.SECP256R1()))


@dataclass
class TestFulcio:
    __test__ = False
    name: str
    root: x509.Certificate
    root_key: ec.EllipticCurvePrivateKey
    intermediate: x509.Certificate
    intermediate_key: ec.EllipticCurvePrivateKey

    @property
    def chain_pem(self) -> bytes:
        """Intermediate then root: cosign's --certificate-chain and the chain annotation."""
        return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (self.intermediate, self.root))

    def write(self, directory: Path) -> tuple[Path, Path]:
        """(chain.pem with intermediate and root, root.pem)."""
        directory.mkdir(parents=True, exist_ok=True)
        chain, root = directory / f"{self.name}-chain.pem", directory / f"{self.name}-root.pem"
        chain.write_bytes(self.chain_pem)
        root.write_bytes(self.root.public_bytes(serialization.Encoding.PEM))
        return chain, root

    def issue(
        self,
        public_key: Any,
        *,
        subject: str = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1",
        issuer: str | None = "https://token.actions.githubusercontent.com",
        github: Mapping[str, str] | None = None,
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
        code_signing: bool = True,
        ct_log: TestCTLog | None = None,
    ) -> x509.Certificate:
        not_before = not_before or NOW - dt.timedelta(minutes=5)
        not_after = not_after or not_before + dt.timedelta(minutes=10) + (NOW - not_before) + dt.timedelta(hours=1)
        san: x509.GeneralName = x509.RFC822Name(subject) if "@" in subject and "://" not in subject else x509.UniformResourceIdentifier(subject)
        usages = [ExtendedKeyUsageOID.CODE_SIGNING] if code_signing else [ExtendedKeyUsageOID.CLIENT_AUTH]
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.KeyUsage(True, False, False, False, False, False, False, False, False), True),
            (x509.ExtendedKeyUsage(usages), False),
            (x509.SubjectKeyIdentifier.from_public_key(public_key), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(self.intermediate_key.public_key()), False),
            (x509.SubjectAlternativeName([san]), True),
        ]
        if issuer is not None:
            extensions.append((x509.UnrecognizedExtension(x509.ObjectIdentifier(OIDC_ISSUER_V1), issuer.encode()), False))
            extensions.append((x509.UnrecognizedExtension(x509.ObjectIdentifier(OIDC_ISSUER_V2), _der_utf8(issuer)), False))
        for oid, key in ((GITHUB_TRIGGER, "trigger"), (GITHUB_REPOSITORY, "repository"), (GITHUB_REF, "ref")):
            if github and key in github:
                extensions.append((x509.UnrecognizedExtension(x509.ObjectIdentifier(oid), github[key].encode()), False))
        serial = x509.random_serial_number()

        def build(extra: Iterable[tuple[x509.ExtensionType, bool]] = ()) -> x509.Certificate:
            builder = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([]))
                .issuer_name(self.intermediate.subject)
                .public_key(public_key)
                .serial_number(serial)
                .not_valid_before(not_before)
                .not_valid_after(not_after)
            )
            for extension, critical in [*extensions, *extra]:
                builder = builder.add_extension(extension, critical)
            return builder.sign(self.intermediate_key, hashes.SHA256())

        if ct_log is None:
            return build()
        # The SCT signs the certificate's TBS without the SCT list (the precertificate), which is
        # what the final certificate's TBS becomes when that last extension is taken out.
        precert_tbs = build().tbs_certificate_bytes
        scts = ct_log.sct_list(precert_tbs, self.intermediate_key.public_key(), not_before)
        leaf = build([(x509.UnrecognizedExtension(x509.ObjectIdentifier(SCT_LIST_OID), _der_octets(scts)), False)])
        assert leaf.tbs_precertificate_bytes == precert_tbs
        return leaf


def _ca(name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, path_length: int | None) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "signgate tests"), x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_name, issuer_key = issuer or (subject, key)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        .sign(issuer_key, hashes.SHA256())
    )


def new_fulcio(name: str = "test-fulcio") -> TestFulcio:
    root_key, intermediate_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    root = _ca(f"{name} root", root_key, None, 1)
    intermediate = _ca(f"{name} intermediate", intermediate_key, (root.subject, root_key), 0)
    return TestFulcio(name, root, root_key, intermediate, intermediate_key)


def trusted_root(path: Path, fulcio: TestFulcio, ct_logs: Iterable[TestCTLog] = (), tlogs: Iterable[Any] = (), tsas: Iterable[Any] = ()) -> Path:
    """Write a trusted_root.json (media type v0.1) for the CA, CT logs, transparency logs and TSAs
    (tests/support/tsa.py: their chain is the TSA certificate, then its root)."""
    start = (NOW - dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def log_entry(key: Any, log_id: bytes, details: str, url: str) -> dict[str, Any]:
        return {
            "baseUrl": url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": b64(_spki(key)), "keyDetails": details, "validFor": {"start": start}},
            "logId": {"keyId": b64(log_id)},
        }

    document = {
        "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
        "tlogs": [
            log_entry(log.private.public_key(), log.log_id, "PKIX_ECDSA_P256_SHA_256" if log.kind == "v1" else "PKIX_ED25519", f"https://{log.name}")
            for log in tlogs
        ],
        "certificateAuthorities": [
            {
                "subject": {"organization": "signgate tests", "commonName": fulcio.name},
                "uri": f"https://{fulcio.name}.test",
                "certChain": {"certificates": [{"rawBytes": b64(c.public_bytes(serialization.Encoding.DER))} for c in (fulcio.intermediate, fulcio.root)]},
                "validFor": {"start": start},
            }
        ],
        "ctlogs": [log_entry(ct.private.public_key(), ct.log_id, "PKIX_ECDSA_P256_SHA_256", "https://ct.test") for ct in ct_logs],
        "timestampAuthorities": [
            {
                "subject": {"organization": "signgate tests", "commonName": "tsa"},
                "uri": "https://tsa.test",
                "certChain": {"certificates": [{"rawBytes": b64(c.public_bytes(serialization.Encoding.DER))} for c in (tsa.certificate, tsa.root)]},
                "validFor": {"start": start},
            }
            for tsa in tsas
        ],
    }
    path.write_text(json.dumps(document, indent=1))
    return path


def ca_bundle(path: Path, not_after: dt.datetime, name: str = "corp signing root") -> Path:
    """A private PKI's PEM CA bundle (`certificateAuthorities`): one self-signed root ending at `not_after`."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_after - dt.timedelta(days=365)).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()
