"""Specification of trusted public keys (signgate.keys).

signgate accepts the public keys `cosign verify --key` accepts and checks each signature the way
cosign (and sigstore's verifier) would. `PublicKey.verify` is a predicate: bad input gives False,
never an exception, because one malformed signature layer must not abort the whole check.
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, padding, rsa, utils, x25519
from cryptography.x509.oid import NameOID

from signgate.config import KeySpec
from signgate.errors import KeyLoadError
from signgate.keys import PublicKey, load_public_key

DATA = b'{"critical":{"identity":{"docker-reference":"registry.example.com/app"}}}'
TAMPERED = DATA.replace(b"app", b"evil")

SPKI = (serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
PKCS1 = (serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)


# Key generation is slow for RSA; every private key is made once per module.
_PRIVATE_KEYS: dict[str, Any] = {}


def private_key(kind: str) -> Any:
    if kind not in _PRIVATE_KEYS:
        makers: dict[str, Callable[[], Any]] = {
            "p256": lambda: ec.generate_private_key(ec.SECP256R1()),
            "p384": lambda: ec.generate_private_key(ec.SECP384R1()),
            "p521": lambda: ec.generate_private_key(ec.SECP521R1()),
            "rsa2048": lambda: rsa.generate_private_key(65537, 2048),
            "ed25519": ed25519.Ed25519PrivateKey.generate,
        }
        base, _, _ = kind.partition("#")  # "p256#other" is a second key of the same type
        _PRIVATE_KEYS[kind] = makers[base]()
    return _PRIVATE_KEYS[kind]


def write_pem(tmp_path: Path, pem: bytes, filename: str = "cosign.pub") -> str:
    path = tmp_path / filename
    path.write_bytes(pem)
    return str(path)


def load(tmp_path: Path, kind: str, pem_format=SPKI, hash_algorithm: str | None = None) -> PublicKey:
    pem = private_key(kind).public_key().public_bytes(*pem_format)
    return load_public_key(KeySpec("team", write_pem(tmp_path, pem), hash_algorithm))


# --- signers: how each kind of signature is made ----------------------------------------------


def ecdsa_der(hash_name: str) -> Callable[[Any, bytes], bytes]:
    def sign(key: Any, data: bytes) -> bytes:
        return key.sign(data, ec.ECDSA(getattr(hashes, hash_name.upper())()))

    return sign


def ecdsa_raw(hash_name: str) -> Callable[[Any, bytes], bytes]:
    """IEEE P1363 r||s, each padded to the curve size."""

    def sign(key: Any, data: bytes) -> bytes:
        r, s = utils.decode_dss_signature(ecdsa_der(hash_name)(key, data))
        size = (key.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")

    return sign


def rsa_pkcs1(hash_name: str) -> Callable[[Any, bytes], bytes]:
    def sign(key: Any, data: bytes) -> bytes:
        return key.sign(data, padding.PKCS1v15(), getattr(hashes, hash_name.upper())())

    return sign


def rsa_pss(key: Any, data: bytes) -> bytes:
    return key.sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), padding.PSS.MAX_LENGTH), hashes.SHA256())


def ed25519_sign(key: Any, data: bytes) -> bytes:
    return key.sign(data)


@dataclass(frozen=True)
class Case:
    kind: str
    sign: Callable[[Any, bytes], bytes]
    pem_format: tuple = SPKI
    hash_algorithm: str | None = None


ACCEPTED = [
    pytest.param(Case("p256", ecdsa_der("sha256")), id="p256-der-sha256"),
    pytest.param(Case("p256", ecdsa_raw("sha256")), id="p256-raw-r-s-sha256"),
    pytest.param(Case("p384", ecdsa_der("sha384")), id="p384-der-sha384-curve-default"),
    pytest.param(Case("p384", ecdsa_der("sha256")), id="p384-der-sha256-fallback-of-older-cosign"),
    pytest.param(Case("p384", ecdsa_raw("sha384")), id="p384-raw-r-s-sha384"),
    pytest.param(Case("p384", ecdsa_raw("sha256")), id="p384-raw-r-s-sha256-fallback"),
    pytest.param(Case("p521", ecdsa_der("sha512")), id="p521-der-sha512-curve-default"),
    pytest.param(Case("p521", ecdsa_der("sha256")), id="p521-der-sha256-fallback"),
    pytest.param(Case("p521", ecdsa_raw("sha512")), id="p521-raw-r-s-sha512"),
    pytest.param(Case("p256", ecdsa_der("sha384"), hash_algorithm="sha384"), id="p256-hash-algorithm-override-sha384"),
    pytest.param(Case("rsa2048", rsa_pkcs1("sha256")), id="rsa2048-public-key-pem-pkcs1v15-sha256"),
    pytest.param(Case("rsa2048", rsa_pkcs1("sha256"), PKCS1), id="rsa2048-rsa-public-key-pem-pkcs1v15-sha256"),
    pytest.param(Case("rsa2048", rsa_pkcs1("sha512"), hash_algorithm="sha512"), id="rsa2048-hash-algorithm-override-sha512"),
    pytest.param(Case("ed25519", ed25519_sign), id="ed25519-pure"),
]


@pytest.mark.parametrize("case", ACCEPTED)
def test_valid_signature_verifies(case: Case, tmp_path):
    key = load(tmp_path, case.kind, case.pem_format, case.hash_algorithm)
    signature = case.sign(private_key(case.kind), DATA)
    assert key.signature_is_valid(signature, DATA) is True


@pytest.mark.parametrize("case", ACCEPTED)
def test_signature_over_other_data_is_rejected(case: Case, tmp_path):
    key = load(tmp_path, case.kind, case.pem_format, case.hash_algorithm)
    signature = case.sign(private_key(case.kind), DATA)
    assert key.signature_is_valid(signature, TAMPERED) is False
    assert key.signature_is_valid(signature, DATA + b"\n") is False


@pytest.mark.parametrize("case", ACCEPTED)
def test_signature_by_another_key_of_the_same_type_is_rejected(case: Case, tmp_path):
    key = load(tmp_path, case.kind, case.pem_format, case.hash_algorithm)
    signature = case.sign(private_key(case.kind + "#other"), DATA)
    assert key.signature_is_valid(signature, DATA) is False


REJECTED = [
    pytest.param(Case("p256", ecdsa_der("sha384")), id="p256-sha384-without-hash-algorithm"),
    pytest.param(Case("p384", ecdsa_der("sha512")), id="p384-sha512-is-neither-default-nor-fallback"),
    pytest.param(Case("p384", ecdsa_der("sha384"), hash_algorithm="sha256"), id="override-replaces-the-curve-default"),
    pytest.param(Case("p521", ecdsa_der("sha256"), hash_algorithm="sha512"), id="override-replaces-the-sha256-fallback"),
    pytest.param(Case("rsa2048", rsa_pkcs1("sha256"), hash_algorithm="sha512"), id="rsa-override-is-exclusive"),
    pytest.param(Case("rsa2048", rsa_pkcs1("sha512")), id="rsa-sha512-without-hash-algorithm"),
    pytest.param(Case("rsa2048", rsa_pss), id="rsa-pss-is-not-pkcs1v15"),
]


@pytest.mark.parametrize("case", REJECTED)
def test_signature_with_the_wrong_scheme_is_rejected(case: Case, tmp_path):
    key = load(tmp_path, case.kind, case.pem_format, case.hash_algorithm)
    assert key.signature_is_valid(case.sign(private_key(case.kind), DATA), DATA) is False


def test_ecdsa_signature_is_not_accepted_by_an_rsa_key(tmp_path):
    key = load(tmp_path, "rsa2048")
    assert key.signature_is_valid(ecdsa_der("sha256")(private_key("p256"), DATA), DATA) is False


def _garbage(kind: str) -> list[Any]:
    valid = {
        "p256": ecdsa_der("sha256"),
        "p384": ecdsa_der("sha384"),
        "p521": ecdsa_der("sha512"),
        "rsa2048": rsa_pkcs1("sha256"),
        "ed25519": ed25519_sign,
    }[kind](private_key(kind), DATA)
    return [
        pytest.param(b"", id=f"{kind}-empty"),
        pytest.param(b"not a signature", id=f"{kind}-garbage"),
        pytest.param(b"\x00" * 64, id=f"{kind}-64-zero-bytes"),
        pytest.param(b"\x00" * 132, id=f"{kind}-132-zero-bytes"),
        pytest.param(utils.encode_dss_signature(0, 0), id=f"{kind}-der-zero-r-s"),
        pytest.param(b"\x30" * (16 * 1024 + 1), id=f"{kind}-oversized"),
        pytest.param(valid[:-1], id=f"{kind}-truncated-valid-signature"),
        pytest.param(valid + b"\x00", id=f"{kind}-valid-signature-with-trailing-byte"),
        pytest.param(bytes([valid[0] ^ 1]) + valid[1:], id=f"{kind}-valid-signature-first-bit-flipped"),
    ]


@pytest.mark.parametrize(
    "kind, signature",
    [
        pytest.param(kind, param.values[0], id=param.id)
        for kind in ("p256", "p384", "p521", "rsa2048", "ed25519")
        for param in _garbage(kind)
    ],
)
def test_malformed_signature_is_rejected_without_raising(kind, signature, tmp_path):
    key = load(tmp_path, kind)
    assert key.signature_is_valid(signature, DATA) is False


# --- what a loaded key says about itself ------------------------------------------------------


@pytest.mark.parametrize(
    "kind, pem_format, expected_kind, expected_hashes",
    [
        pytest.param("p256", SPKI, "ecdsa-p256", ("sha256",), id="p256-sha256"),
        pytest.param("p384", SPKI, "ecdsa-p384", ("sha384", "sha256"), id="p384-sha384-then-sha256"),
        pytest.param("p521", SPKI, "ecdsa-p521", ("sha512", "sha256"), id="p521-sha512-then-sha256"),
        pytest.param("rsa2048", SPKI, "rsa-2048", ("sha256",), id="rsa-public-key-pem"),
        pytest.param("rsa2048", PKCS1, "rsa-2048", ("sha256",), id="rsa-rsa-public-key-pem"),
        pytest.param("ed25519", SPKI, "ed25519", (), id="ed25519-has-no-separate-hash"),
    ],
)
def test_key_kind_and_hash_order(kind, pem_format, expected_kind, expected_hashes, tmp_path):
    key = load(tmp_path, kind, pem_format)
    assert (key.kind, key.hash_algorithms) == (expected_kind, expected_hashes)
    assert (key.name, key.path) == ("team", str(tmp_path / "cosign.pub"))


@pytest.mark.parametrize(
    "kind, hash_algorithm, expected",
    [
        pytest.param("p384", "sha512", ("sha512",), id="ecdsa-override-is-the-only-hash"),
        pytest.param("rsa2048", "sha384", ("sha384",), id="rsa-override-is-the-only-hash"),
    ],
)
def test_hash_algorithm_override(kind, hash_algorithm, expected, tmp_path):
    assert load(tmp_path, kind, hash_algorithm=hash_algorithm).hash_algorithms == expected


def test_fingerprint_is_sha256_of_the_spki_whatever_the_pem_flavour(tmp_path):
    public = private_key("rsa2048").public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    spki = load_public_key(KeySpec("a", write_pem(tmp_path, public.public_bytes(*SPKI), "a.pub")))
    pkcs1 = load_public_key(KeySpec("b", write_pem(tmp_path, public.public_bytes(*PKCS1), "b.pub")))
    assert spki.fingerprint == pkcs1.fingerprint == hashlib.sha256(der).hexdigest()
    assert spki.spki_der == der


# --- loading errors ---------------------------------------------------------------------------


def _self_signed_certificate() -> bytes:
    key = private_key("p256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signgate test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM)


def _public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(*SPKI)


def _private_pem(key: Any, fmt: serialization.PrivateFormat) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


LOAD_ERRORS = [
    pytest.param(lambda: _private_pem(private_key("p256"), serialization.PrivateFormat.PKCS8),
                 "holds a private key; mount only the public key", id="pkcs8-private-key"),
    pytest.param(lambda: _private_pem(private_key("p256"), serialization.PrivateFormat.TraditionalOpenSSL),
                 "holds a private key; mount only the public key", id="ec-private-key"),
    pytest.param(lambda: _private_pem(private_key("rsa2048"), serialization.PrivateFormat.TraditionalOpenSSL),
                 "holds a private key; mount only the public key", id="rsa-private-key"),
    pytest.param(_self_signed_certificate, "holds a certificate; signgate needs a PEM PUBLIC KEY", id="certificate"),
    pytest.param(lambda: b"this is not a key\n", "is not a PEM public key", id="garbage"),
    pytest.param(lambda: b"", "is not a PEM public key", id="empty-file"),
    pytest.param(lambda: private_key("p256").public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
                 "is not a PEM public key", id="der-instead-of-pem"),
    pytest.param(lambda: b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
                 "is not a PEM public key", id="truncated-pem"),
    pytest.param(lambda: _public_pem(rsa.generate_private_key(65537, 1024)),
                 "RSA keys shorter than 2048 bits are refused", id="rsa-1024"),
    pytest.param(lambda: _public_pem(ec.generate_private_key(ec.SECP256K1())),
                 "ECDSA curve secp256k1 is not supported (use P-256, P-384 or P-521)", id="secp256k1"),
    pytest.param(lambda: _public_pem(x25519.X25519PrivateKey.generate()), "key type X25519PublicKey is not supported",
                 id="x25519-is-not-a-signing-key"),
    pytest.param(lambda: _public_pem(ed448.Ed448PrivateKey.generate()), "key type Ed448PublicKey is not supported",
                 id="ed448"),
    pytest.param(lambda: _public_pem(dsa.generate_private_key(2048)), "key type DSAPublicKey is not supported",
                 id="dsa"),
    pytest.param(lambda: b"#" * (64 * 1024 + 1), "is larger than 65536 bytes", id="file-over-64-kib"),
]


@pytest.mark.parametrize("make_pem, problem", LOAD_ERRORS)
def test_unusable_key_file_is_refused_with_a_clear_message(make_pem, problem, tmp_path):
    path = write_pem(tmp_path, make_pem(), "team.pub")
    with pytest.raises(KeyLoadError) as info:
        load_public_key(KeySpec("team", path))
    message = str(info.value)
    assert message.startswith("key 'team': ")
    assert path in message
    assert problem in message
    assert info.value.reason == "invalid-key"


def test_missing_key_file(tmp_path):
    path = str(tmp_path / "missing.pub")
    with pytest.raises(KeyLoadError) as info:
        load_public_key(KeySpec("team", path))
    assert str(info.value) == f"key 'team': file {path} not found"


def test_unreadable_key_path(tmp_path):
    with pytest.raises(KeyLoadError) as info:
        load_public_key(KeySpec("team", str(tmp_path)))
    assert str(info.value).startswith(f"key 'team': cannot read {tmp_path}: ")


def test_hash_algorithm_is_refused_for_ed25519(tmp_path):
    path = write_pem(tmp_path, private_key("ed25519").public_key().public_bytes(*SPKI))
    with pytest.raises(KeyLoadError) as info:
        load_public_key(KeySpec("team", path, "sha512"))
    assert str(info.value) == "key 'team': hashAlgorithm does not apply to Ed25519 keys"
