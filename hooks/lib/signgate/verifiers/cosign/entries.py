"""Whether a transparency-log entry is about the signature just verified.

    check_entry_body(body, signature, key, digests, dsse, kind_version) -> EntryProblem | None

A valid SET or inclusion proof proves only that *some* entry is in the log. The entry must also
name this very signature, made by this signer, over this content; otherwise a genuine proof of
another entry could be pasted beside any signature (sigstore-python's CVE-2022-36056). One
function for the hook (rekor.py: legacy layers and bundles) and for `signgate sigstore
verify-bundle` (conformance.py), so that the conformance suite checks the hook's binding.

What binds, by entry kind (as Rekor canonicalizes them):

| kind, version | content | signer |
| --- | --- | --- |
| hashedrekord 0.0.1 | `data.hash` (sha256, hex) is one of `digests` | `signature.publicKey.content`: base64 PEM |
| hashedrekord 0.0.2 (Rekor v2) | `data.digest` (SHA2_256, base64) is one of `digests` | `verifier.publicKey.rawBytes` (DER SPKI) or `verifier.x509Certificate.rawBytes` |
| dsse 0.0.1 | `payloadHash` is sha256 of the DSSE payload | each `signatures[].verifier`: base64 PEM |
| dsse 0.0.2 (Rekor v2) | `payloadHash` (SHA2_256, base64) likewise | each `signatures[].verifier`, as hashedrekord 0.0.2 |
| intoto 0.0.2 | `payloadHash` likewise, and the envelope's payload type | each `envelope.signatures[].publicKey`; `sig` is base64 twice |

The signer matches when the logged verifier is this key, or, for a key a certificate carried
(`PublicKey.certificate_der`), this very certificate: a second certificate for the same key (for
another identity) logged beside this signature proves nothing about this one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Collection

from ...encoding import b64_strict
from ...keys import PublicKey

MAX_ENTRY_SIGNATURES = 16


@dataclass(frozen=True)
class EntryProblem:
    message: str  # for the kubectl reader, starting "its transparency-log entry ..." or "the transparency-log entry ..."
    malformed: bool = False  # the body cannot be read at all (as opposed to: it is about something else)


_MALFORMED = EntryProblem("its transparency-log entry body is malformed", malformed=True)
_OTHER_PAYLOAD = EntryProblem("the transparency-log entry is for another payload")
_OTHER_SIGNER = EntryProblem("the transparency-log entry is for another signature or key")
_HASH = EntryProblem("its transparency-log entry uses an unsupported hash")


def check_entry_body(
    body: bytes | None,
    signature: bytes,
    key: PublicKey,
    digests: Collection[bytes],
    dsse: tuple[str, bytes] | None = None,
    kind_version: tuple[Any, Any] | None = None,
) -> EntryProblem | None:
    """None when the entry `body` logs `signature` by `key` over content with one of the SHA-256
    `digests` (what was signed: the artifact, or a DSSE envelope's pre-authentication encoding) or,
    for DSSE entries, over the envelope `dsse` = (payload type, payload). `kind_version`: the
    bundle's claim about the body's kind, which must match it."""
    if body is None:
        return EntryProblem("its transparency-log entry body is not base64", malformed=True)
    try:
        document = json.loads(body)
        kind, version, spec = document["kind"], document.get("apiVersion"), document["spec"]
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError, RecursionError):
        return _MALFORMED
    if kind_version is not None and (kind, version) != tuple(kind_version):
        return EntryProblem("its transparency-log entry's kindVersion does not match its body")
    payload_digest = hashlib.sha256(dsse[1]).digest() if dsse is not None else None
    try:
        if (kind, version) == ("hashedrekord", "0.0.1"):
            logged = spec["data"]["hash"]
            if logged.get("algorithm") != "sha256":
                return _HASH
            if not isinstance(logged.get("value"), str) or logged["value"] not in {d.hex() for d in digests}:
                return _OTHER_PAYLOAD
            pairs = [(b64_strict(spec["signature"]["content"]), ("pem", spec["signature"]["publicKey"]["content"]))]
        elif (kind, version) == ("hashedrekord", "0.0.2"):
            v2 = spec["hashedRekordV002"]
            if v2["data"]["algorithm"] != "SHA2_256":
                return _HASH
            if b64_strict(v2["data"]["digest"]) not in set(digests):
                return _OTHER_PAYLOAD
            pairs = [(b64_strict(v2["signature"]["content"]), _v2_verifier(v2["signature"]["verifier"]))]
        elif (kind, version) == ("dsse", "0.0.1"):
            hashed = spec["payloadHash"]
            if payload_digest is None or hashed.get("algorithm") != "sha256" or hashed.get("value") != payload_digest.hex():
                return _OTHER_PAYLOAD
            pairs = [(b64_strict(s["signature"]), ("pem", s["verifier"])) for s in spec["signatures"][:MAX_ENTRY_SIGNATURES]]
        elif (kind, version) == ("dsse", "0.0.2"):
            v2 = spec["dsseV002"]
            if payload_digest is None or v2["payloadHash"]["algorithm"] != "SHA2_256" or b64_strict(v2["payloadHash"]["digest"]) != payload_digest:
                return _OTHER_PAYLOAD
            pairs = [(b64_strict(s["content"]), _v2_verifier(s["verifier"])) for s in v2["signatures"][:MAX_ENTRY_SIGNATURES]]
        elif (kind, version) == ("intoto", "0.0.2"):
            content = spec["content"]
            hashed, envelope = content["payloadHash"], content["envelope"]
            if payload_digest is None or hashed.get("algorithm") != "sha256" or hashed.get("value") != payload_digest.hex():
                return _OTHER_PAYLOAD
            if dsse is None or envelope.get("payloadType") != dsse[0]:
                return _OTHER_PAYLOAD
            # intoto 0.0.2 stores each signature base64-encoded a second time.
            pairs = [(b64_strict(_ascii(b64_strict(s["sig"]))), ("pem", s["publicKey"])) for s in envelope["signatures"][:MAX_ENTRY_SIGNATURES]]
        else:
            return EntryProblem(f"its transparency-log entry kind {str(kind)[:40]!r} {str(version)[:12]} is not supported")
    except (KeyError, TypeError, AttributeError):
        return _MALFORMED
    if any(logged == signature and _names_signer(verifier, key) for logged, verifier in pairs):
        return None
    return _OTHER_SIGNER


def _v2_verifier(verifier: Any) -> tuple[str, Any]:
    if "publicKey" in verifier:
        return "key", b64_strict(verifier["publicKey"]["rawBytes"])
    return "certificate", b64_strict(verifier["x509Certificate"]["rawBytes"])


def _ascii(raw: bytes | None) -> str | None:
    try:
        return raw.decode("ascii") if raw is not None else None
    except UnicodeDecodeError:
        return None


def _names_signer(verifier: tuple[str, Any], key: PublicKey) -> bool:
    """Whether a logged verifier is the signer: for a key a certificate carried, that very
    certificate; otherwise this key (as a PEM key, or as the key of a logged PEM certificate)."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    form, value = verifier
    if value is None:
        return False
    try:
        if form == "certificate":
            return key.certificate_der is not None and value == key.certificate_der
        if form == "key":
            return key.certificate_der is None and value == key.spki_der
        pem = b64_strict(value)
        if pem is None:
            return False
        if b"CERTIFICATE" in pem:
            certificate = x509.load_pem_x509_certificate(pem)
            if key.certificate_der is not None:
                return certificate.public_bytes(serialization.Encoding.DER) == key.certificate_der
            public = certificate.public_key()
        elif key.certificate_der is not None:
            return False
        else:
            public = serialization.load_pem_public_key(pem)
        return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == key.spki_der
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # A logged key or certificate that cannot be read (an unknown algorithm, say) is not this signer.
        return False
