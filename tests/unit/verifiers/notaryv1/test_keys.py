"""TUF keys: IDs, the certificate-wrapped root key and its canonical ID, and Notary's signature rules."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from signgate.verifiers.notaryv1.errors import InvalidMetadata
from signgate.verifiers.notaryv1.keys import MAX_KEYS, TufKey, parse_key, parse_keys, signature_is_valid, tuf_key_id

from .tuf import Signer, b64, ecdsa_key, ed25519_key, root_key, rsa_key

MESSAGE = b'{"_type":"Targets"}'


@pytest.fixture(scope="module")
def rsa() -> Signer:
    return rsa_key()


def test_key_id_is_the_sha256_of_the_canonical_key_object() -> None:
    # Written out by hand: keys sorted, no spaces, private as null, public in base64.
    expected = hashlib.sha256(b'{"keytype":"ed25519","keyval":{"private":null,"public":"AQID"}}').hexdigest()
    assert tuf_key_id("ed25519", b"\x01\x02\x03") == expected


def test_parse_key_checks_that_the_id_names_the_key() -> None:
    signer = ed25519_key()
    key = parse_key(signer.key_id, signer.obj, "targets.json of g")
    assert key.key is not None and key.problem is None and key.canonical_id == signer.key_id
    with pytest.raises(InvalidMetadata, match="^targets.json of g: key ID 000000000000… is not the ID of the key it names$"):
        parse_key("0" * 64, signer.obj, "targets.json of g")


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ("not a key", "key abc is malformed"),
        ({"keytype": "ecdsa"}, "key abc is malformed"),
        ({"keytype": "ecdsa", "keyval": {}}, "key abc has no public part"),
        ({"keytype": "ecdsa", "keyval": {"public": "not base64!"}}, "key abc: invalid base64"),
    ],
)
def test_parse_key_refuses_malformed_entries(obj: object, message: str) -> None:
    with pytest.raises(InvalidMetadata, match=f"^root.json: {message}$"):
        parse_key("abc", obj, "root.json")


def _listed(keytype: str, public: bytes) -> TufKey:
    obj = {"keytype": keytype, "keyval": {"private": None, "public": b64(public)}}
    return parse_key(tuf_key_id(keytype, public), obj, "root.json")


def test_unusable_keys_keep_their_id_but_verify_nothing(rsa: Signer) -> None:
    weak = rsa_key(1024)
    cases = {
        "key type 'gpg' is not supported": _listed("gpg", b"x"),
        "an ed25519 key must be 32 bytes": _listed("ed25519", b"x" * 31),
        "unreadable ecdsa key (ValueError)": _listed("ecdsa", b"not DER"),
        "a ecdsa key holds a RSAPublicKey": _listed("ecdsa", rsa.public),
        "RSA keys shorter than 2048 bits are refused": _listed("rsa", weak.public),
    }
    for problem, key in cases.items():
        assert key.key is None and key.problem == problem
        assert key.fingerprint == "" and key.canonical_id == key.key_id
        assert not signature_is_valid(key, "ecdsa", b"sig", MESSAGE)


def test_certificate_key_canonical_id_and_fingerprint_are_those_of_the_key_inside() -> None:
    signer = root_key()
    key = parse_key(signer.key_id, signer.obj, "root.json")
    assert key.keytype == "ecdsa-x509" and key.certificate is not None
    pinned = signer.pinned()
    assert key.fingerprint == pinned.fingerprint  # what verify_root compares with the pinned PEM
    assert key.canonical_id == tuf_key_id("ecdsa", pinned.spki_der) != key.key_id  # `notary key list`
    assert key.public_pem().startswith(b"-----BEGIN PUBLIC KEY-----")


def test_parse_keys_bounds_and_shape() -> None:
    signer = ecdsa_key()
    assert parse_keys(None, "l") == {}
    assert list(parse_keys({signer.key_id: signer.obj}, "l")) == [signer.key_id]
    with pytest.raises(InvalidMetadata, match="^l: keys is not a mapping$"):
        parse_keys([], "l")
    with pytest.raises(InvalidMetadata, match=f"^l lists more than {MAX_KEYS} keys$"):
        parse_keys({str(i): {} for i in range(MAX_KEYS + 1)}, "l")


def test_ecdsa_signatures_in_der_and_raw_form_verify_with_sha256() -> None:
    signer = ecdsa_key()
    key = _listed("ecdsa", signer.public)
    for raw in (False, True):
        method, signature = signer.sign(MESSAGE, raw_ecdsa=raw)
        assert signature_is_valid(key, method, signature, MESSAGE)
        assert not signature_is_valid(key, method, signature, MESSAGE + b" ")
        assert not signature_is_valid(key, "eddsa", signature, MESSAGE)  # the method must fit the key


def test_a_p384_key_is_checked_with_sha256_as_notary_does() -> None:
    """Unlike a configured cosign key (signgate.keys tries the curve's own hash first), Notary's
    verifier hashes with SHA-256 whatever the curve: a SHA-384 signature does not count."""
    from cryptography.hazmat.primitives import hashes

    signer = ecdsa_key(ec.SECP384R1())
    key = _listed("ecdsa", signer.public)
    assert signature_is_valid(key, *signer.sign(MESSAGE), MESSAGE)
    sha384 = signer.private.sign(MESSAGE, ec.ECDSA(hashes.SHA384()))
    assert not signature_is_valid(key, "ecdsa", sha384, MESSAGE)


def test_ed25519_and_rsa_signatures(rsa: Signer) -> None:
    ed = ed25519_key()
    assert signature_is_valid(_listed("ed25519", ed.public), *ed.sign(MESSAGE), MESSAGE)
    key = _listed("rsa", rsa.public)
    for method in ("rsapss", "rsapkcs1v15"):
        _, signature = rsa.sign(MESSAGE, method=method)
        assert signature_is_valid(key, method, signature, MESSAGE)
    _, pss = rsa.sign(MESSAGE, method="rsapss")
    assert not signature_is_valid(key, "rsapkcs1v15", pss, MESSAGE)  # the padding is the method's
    assert not signature_is_valid(key, "ecdsa", pss, MESSAGE)


def test_empty_or_oversized_signatures_never_verify() -> None:
    signer = ecdsa_key()
    key = _listed("ecdsa", signer.public)
    assert not signature_is_valid(key, "ecdsa", b"", MESSAGE)
    assert not signature_is_valid(key, "ecdsa", b"\x30" * (16 * 1024 + 1), MESSAGE)
    assert not signature_is_valid(key, "ecdsa", b"garbage", MESSAGE)
