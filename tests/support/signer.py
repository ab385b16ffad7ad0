"""A test-only, cosign-compatible signer written from cosign-format.md (§2 legacy ``.sig`` layout,
§6.2 sigstore bundle v0.3 in an OCI referrer with the ``sha256-<hex>`` fallback tag).

Pure builders (payloads, PAE, envelopes, manifests, index updates) are kept apart from the functions
that push, so tests can also craft broken artefacts by hand. Nothing here calls a public Rekor/TUF.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping, Union

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from .oci import (
    DOCKER_CONFIG, DOCKER_MANIFEST, OCI_CONFIG, OCI_EMPTY, OCI_INDEX, OCI_MANIFEST, PushedImage, RegistryHTTP,
    canonical_json, sha256_digest,
)

SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
COSIGN_SIGNATURE_TYPE = "cosign container image signature"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
INTOTO_STATEMENT_V1 = "https://in-toto.io/Statement/v1"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
EMPTY_JSON = b"{}"  # the OCI empty descriptor's blob, used as referrer config

KeyKind = Literal["ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "ed25519"]
KEY_KINDS: tuple[KeyKind, ...] = ("ecdsa-p256", "ecdsa-p384", "ecdsa-p521", "rsa-2048", "ed25519")
PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey]
PublicKey = Union[ec.EllipticCurvePublicKey, rsa.RSAPublicKey, ed25519.Ed25519PublicKey]

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha224": hashes.SHA224, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}
_CURVES = {"ecdsa-p256": ec.SECP256R1, "ecdsa-p384": ec.SECP384R1, "ecdsa-p521": ec.SECP521R1}

# What cosign >= 2.6 signs with per key type (cosign-format.md §3); cosign <= 2.5 used SHA-256.
# Ed25519ph is absent on purpose: `cryptography` only does pure Ed25519.
COSIGN_26_DEFAULT_HASH: dict[KeyKind, str | None] = {
    "ecdsa-p256": "sha256", "ecdsa-p384": "sha384", "ecdsa-p521": "sha512",
    "rsa-2048": "sha256", "ed25519": None,
}


def b64(data: bytes) -> str:
    """Standard base64 with padding, as cosign and protojson write bytes."""
    return base64.b64encode(data).decode()


def _hash(name: str | None) -> hashes.HashAlgorithm:
    name = (name or "sha256").lower().replace("-", "")
    if name not in _HASHES:
        raise ValueError(f"unsupported hash {name!r}")
    return _HASHES[name]()


# -- keys ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TestKey:
    """A generated key pair; the public half is on disk as the verifier would be given it."""

    __test__ = False  # not a pytest test class despite the name

    kind: KeyKind
    name: str
    private_key: PrivateKey
    pub_path: Path  # PEM "PUBLIC KEY" (SubjectPublicKeyInfo)
    key_path: Path  # unencrypted PKCS#8 PEM, for tools that want a private key file
    pkcs1_pub_path: Path | None = None  # PEM "RSA PUBLIC KEY" (PKCS#1), RSA only and on request

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()

    @property
    def public_pem(self) -> bytes:
        return self.pub_path.read_bytes()

    @property
    def public_der(self) -> bytes:
        return self.public_key.public_bytes(serialization.Encoding.DER,
                                            serialization.PublicFormat.SubjectPublicKeyInfo)

    @property
    def hint(self) -> str:
        """verificationMaterial.publicKey.hint: base64(sha256(DER SPKI))."""
        return b64(hashlib.sha256(self.public_der).digest())

    def sign(self, data: bytes, hash: str | None = None) -> bytes:  # noqa: A002
        """ECDSA → ASN.1 DER (SHA-256 unless ``hash``); RSA → PKCS#1 v1.5 (SHA-256 unless ``hash``);
        Ed25519 → pure Ed25519 (a hash is an error: Ed25519ph is not available)."""
        key = self.private_key
        if isinstance(key, ec.EllipticCurvePrivateKey):
            return key.sign(data, ec.ECDSA(_hash(hash)))
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(data, padding.PKCS1v15(), _hash(hash))
        if hash is not None:
            raise ValueError("Ed25519 signs pure (no prehash); pass hash=None")
        return key.sign(data)

    def verify(self, signature: bytes, data: bytes, hash: str | None = None) -> None:  # noqa: A002
        """Independent check used by infrastructure tests; raises InvalidSignature."""
        pub = self.public_key
        if isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(signature, data, ec.ECDSA(_hash(hash)))
        elif isinstance(pub, rsa.RSAPublicKey):
            pub.verify(signature, data, padding.PKCS1v15(), _hash(hash))
        else:
            pub.verify(signature, data)


def _new_private_key(kind: KeyKind) -> PrivateKey:
    if kind in _CURVES:
        return ec.generate_private_key(_CURVES[kind]())
    if kind == "rsa-2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key kind {kind!r}; expected one of {KEY_KINDS}")


def generate_key(kind: KeyKind, directory: Path | str, name: str | None = None, *,
                 rsa_pkcs1_pem: bool = False) -> TestKey:
    """Generate a key and write ``<name>.pub`` (+ ``<name>.key``; ``<name>.rsa.pub`` in PKCS#1 form
    for RSA when ``rsa_pkcs1_pem``)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = name or kind
    key = _new_private_key(kind)
    pub_path = directory / f"{name}.pub"
    pub_path.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    key_path = directory / f"{name}.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    pkcs1_path = None
    if rsa_pkcs1_pem:
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("PKCS#1 public key PEM exists for RSA keys only")
        pkcs1_path = directory / f"{name}.rsa.pub"
        pkcs1_path.write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1))
    return TestKey(kind=kind, name=name, private_key=key, pub_path=pub_path, key_path=key_path,
                   pkcs1_pub_path=pkcs1_path)


def der_to_p1363(signature: bytes, key: TestKey) -> bytes:
    """Re-encode an ECDSA DER signature as fixed-width r||s (sigstore's verifier accepts both)."""
    curve = key.public_key.curve  # type: ignore[union-attr]
    width = (curve.key_size + 7) // 8
    r, s = decode_dss_signature(signature)
    return r.to_bytes(width, "big") + s.to_bytes(width, "big")


# -- legacy .sig layout: pure builders -----------------------------------------------------------


def go_json(obj: object, *, sort_keys: bool = False) -> bytes:
    """Compact JSON as Go's encoding/json writes it: UTF-8 kept, but <, >, & and U+2028/9 escaped.
    Safe to apply on the whole text because those characters only occur inside strings."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, sort_keys=sort_keys)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                          ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text.encode()


def simple_signing_payload(docker_reference: str, digest: str,
                           optional: Mapping[str, object] | None = None,
                           type_: str = COSIGN_SIGNATURE_TYPE) -> bytes:
    """The payload exactly as cosign writes it: struct order for ``critical`` (identity, image,
    type), Go map order (sorted) inside ``optional``, ``"optional":null`` without annotations."""
    critical = go_json({"identity": {"docker-reference": docker_reference},
                        "image": {"docker-manifest-digest": digest}, "type": type_})
    opt = b"null" if optional is None else go_json(dict(optional), sort_keys=True)
    return b'{"critical":' + critical + b',"optional":' + opt + b"}"


def sig_tag(image_digest: str, suffix: str = "sig") -> str:
    """``sha256:abc`` → ``sha256-abc.sig``."""
    alg, _, hex_ = image_digest.partition(":")
    return f"{alg}-{hex_}.{suffix}"


def cosign_config(layer_digests: list[str]) -> bytes:
    """ggcr's empty-image config as cosign stores it (diff_ids = all signature layer digests)."""
    return canonical_json({
        "architecture": "", "created": "0001-01-01T00:00:00Z",
        "history": [{"created": "0001-01-01T00:00:00Z"}], "os": "",
        "rootfs": {"type": "layers", "diff_ids": layer_digests}, "config": {},
    })


def signature_manifest(config: tuple[str, int], layers: list[dict[str, object]], *,
                       docker_media_types: bool = False) -> tuple[bytes, str]:
    manifest_type = DOCKER_MANIFEST if docker_media_types else OCI_MANIFEST
    config_type = DOCKER_CONFIG if docker_media_types else OCI_CONFIG
    body = {"schemaVersion": 2, "mediaType": manifest_type,
            "config": {"mediaType": config_type, "size": config[1], "digest": config[0]},
            "layers": layers}
    return canonical_json(body), manifest_type


@dataclass(frozen=True)
class LegacySignature:
    sig_repo: str
    tag: str  # sha256-<hex>.sig
    manifest_digest: str
    manifest: bytes
    media_type: str
    payload: bytes
    payload_digest: str
    signature: bytes | None  # raw signature bytes (None when a raw annotation string was forced)
    annotation: str  # the value stored under dev.cosignproject.cosign/signature
    layer: dict[str, object]  # the descriptor appended by this call
    layer_count: int  # layers in the .sig manifest after this call


def sign_legacy(http: RegistryHTTP, repo: str, image_digest: str, key: TestKey, *,
                payload: bytes | None = None, docker_reference: str | None = None,
                annotations: Mapping[str, object] | None = None,
                signature_override: bytes | str | None = None,
                extra_layer_annotations: Mapping[str, str] | None = None,
                layer_media_type: str = SIMPLESIGNING, sig_repo: str | None = None,
                docker_media_types: bool = False, hash: str | None = None,  # noqa: A002
                ) -> LegacySignature:
    """Sign ``image_digest`` like ``cosign sign --key --tlog-upload=false`` (legacy layout).

    ``payload`` replaces the generated simple-signing payload (it is still what gets signed);
    ``signature_override`` replaces the signature: bytes are base64-encoded, a str is stored verbatim
    (to plant invalid base64). ``sig_repo`` mimics COSIGN_REPOSITORY. An existing ``.sig`` manifest
    gets the new layer appended, as cosign does.
    """
    target = sig_repo or repo
    if payload is None:
        payload = simple_signing_payload(docker_reference or f"{http.host}/{repo}", image_digest,
                                         annotations)
    signature: bytes | None
    if isinstance(signature_override, str):
        signature, annotation = None, signature_override
    else:
        signature = signature_override if signature_override is not None else key.sign(payload, hash)
        annotation = b64(signature)
    payload_digest = http.push_blob(target, payload)
    layer: dict[str, object] = {
        "mediaType": layer_media_type, "size": len(payload), "digest": payload_digest,
        "annotations": {SIGNATURE_ANNOTATION: annotation, **(extra_layer_annotations or {})},
    }
    tag = sig_tag(image_digest)
    layers = _existing_layers(http, target, tag) + [layer]
    config = cosign_config([str(item["digest"]) for item in layers])
    config_digest = http.push_blob(target, config)
    body, media_type = signature_manifest((config_digest, len(config)), layers,
                                          docker_media_types=docker_media_types)
    digest = http.put_manifest(target, tag, body, media_type)
    return LegacySignature(sig_repo=target, tag=tag, manifest_digest=digest, manifest=body,
                           media_type=media_type, payload=payload, payload_digest=payload_digest,
                           signature=signature, annotation=annotation, layer=layer,
                           layer_count=len(layers))


def _existing_layers(http: RegistryHTTP, repo: str, tag: str) -> list[dict[str, object]]:
    found = http.find_manifest(repo, tag, accept=(OCI_MANIFEST, DOCKER_MANIFEST))
    if found is None:
        return []
    return list(json.loads(found[0]).get("layers") or [])


# -- sigstore bundle v0.3 in a referrer: pure builders -------------------------------------------


def in_toto_statement(subject_digest: str, *, annotations: Mapping[str, str] | None = None,
                      predicate_type: str = COSIGN_SIGN_PREDICATE) -> bytes:
    """The Statement v1 cosign v3 signs: one subject with only a sha256 digest, empty predicate."""
    alg, _, hex_ = subject_digest.partition(":")
    subject: dict[str, object] = {"digest": {alg: hex_}}
    if annotations:
        subject["annotations"] = dict(annotations)
    return go_json({"_type": INTOTO_STATEMENT_V1, "subject": [subject],
                    "predicateType": predicate_type, "predicate": {}})


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: "DSSEv1" SP len(type) SP type SP len(body) SP body,
    lengths in ASCII decimal bytes."""
    type_bytes = payload_type.encode()
    return b" ".join([b"DSSEv1", str(len(type_bytes)).encode(), type_bytes,
                      str(len(payload)).encode(), payload])


def dsse_envelope(payload: bytes, payload_type: str, signatures: list[bytes]) -> dict[str, object]:
    return {"payload": b64(payload), "payloadType": payload_type,
            "signatures": [{"sig": b64(sig)} for sig in signatures]}


def sigstore_bundle(envelope: Mapping[str, object], hint: str) -> bytes:
    """A key-signed bundle without tlog entries or timestamps (``--tlog-upload=false``)."""
    return go_json({"mediaType": BUNDLE_MEDIA_TYPE,
                    "verificationMaterial": {"publicKey": {"hint": hint}},
                    "dsseEnvelope": dict(envelope)})


def referrer_manifest(bundle: tuple[str, int], subject: Mapping[str, object], *,
                      predicate_type: str = COSIGN_SIGN_PREDICATE,
                      created: str | None = None) -> bytes:
    created = created or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return canonical_json({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": BUNDLE_MEDIA_TYPE,
        "config": {"mediaType": OCI_EMPTY, "size": len(EMPTY_JSON),
                   "digest": sha256_digest(EMPTY_JSON), "artifactType": BUNDLE_MEDIA_TYPE},
        "layers": [{"mediaType": BUNDLE_MEDIA_TYPE, "size": bundle[1], "digest": bundle[0]}],
        "subject": dict(subject),
        "annotations": {"dev.sigstore.bundle.content": "dsse-envelope",
                        "dev.sigstore.bundle.predicateType": predicate_type,
                        "org.opencontainers.image.created": created},
    })


def referrer_descriptor(manifest: bytes, artifact_type: str | None) -> dict[str, object]:
    """Fallback-index entry for a referrer; ``artifact_type=""`` omits the field (Go omitempty),
    as older clients left it empty."""
    parsed = json.loads(manifest)
    entry: dict[str, object] = {"mediaType": OCI_MANIFEST, "size": len(manifest),
                                "digest": sha256_digest(manifest)}
    if artifact_type:
        entry["artifactType"] = artifact_type
    if parsed.get("annotations"):
        entry["annotations"] = parsed["annotations"]
    return entry


def fallback_index_add(existing: bytes | None, descriptor: Mapping[str, object]) -> bytes:
    """Read-modify-write of the ``sha256-<hex>`` referrers index; an already listed digest is
    replaced rather than duplicated (as a referrers API would list it once)."""
    index = json.loads(existing) if existing else {"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                   "manifests": []}
    manifests = [m for m in index.get("manifests") or [] if m.get("digest") != descriptor["digest"]]
    index["manifests"] = manifests + [dict(descriptor)]
    return canonical_json(index)


def fallback_tag(image_digest: str) -> str:
    alg, _, hex_ = image_digest.partition(":")
    return f"{alg}-{hex_}"


@dataclass(frozen=True)
class BundleSignature:
    sig_repo: str
    statement: bytes  # what was signed (inside PAE)
    envelope_payload: bytes  # what the envelope carries (differs from statement if tampered)
    pae: bytes
    signature: bytes
    bundle: bytes
    bundle_digest: str
    referrer_digest: str
    referrer_manifest: bytes
    fallback_tag: str
    index: bytes
    index_digest: str

    @property
    def bundle_json(self) -> dict[str, object]:
        return json.loads(self.bundle)


def attach_referrer(http: RegistryHTTP, repo: str, image_digest: str, manifest: bytes, blobs: list[bytes],
                    artifact_type: str | None) -> tuple[str, bytes, str]:
    """Push a referrer manifest (and its blobs) and list it under the image's fallback tag, as
    cosign does on a registry without a referrers API (the Debian registry has none).
    Returns (the referrer's digest, the fallback index, its digest)."""
    for blob in [EMPTY_JSON, *blobs]:
        http.push_blob(repo, blob)
    referrer_digest = http.put_manifest(repo, sha256_digest(manifest), manifest, OCI_MANIFEST)
    tag = fallback_tag(image_digest)
    existing = http.find_manifest(repo, tag, accept=(OCI_INDEX,))
    index = fallback_index_add(existing[0] if existing else None, referrer_descriptor(manifest, artifact_type))
    return referrer_digest, index, http.put_manifest(repo, tag, index, OCI_INDEX)


def attach_bundle(http: RegistryHTTP, repo: str, image: PushedImage, bundle: bytes) -> str:
    """Attach a sigstore bundle made elsewhere as a referrer of `image`; returns the referrer's digest."""
    manifest = referrer_manifest((sha256_digest(bundle), len(bundle)), image.descriptor())
    return attach_referrer(http, repo, image.digest, manifest, [bundle], BUNDLE_MEDIA_TYPE)[0]


def sign_bundle(http: RegistryHTTP, repo: str, image_digest: str, image_media_type: str,
                image_size: int, key: TestKey, *,
                annotations: Mapping[str, str] | None = None,
                predicate_type: str = COSIGN_SIGN_PREDICATE, subject_digest: str | None = None,
                tamper_payload: bool = False, payload_type: str = INTOTO_PAYLOAD_TYPE,
                sig_repo: str | None = None, index_artifact_type: str | None = None,
                hash: str | None = None, created: str | None = None,  # noqa: A002
                ) -> BundleSignature:
    """Sign like cosign v3 with a key and no tlog, then attach as a referrer of the image.

    ``subject_digest`` puts another digest in the in-toto subject (the referrer still points at the
    image, so it is found); ``tamper_payload`` changes the envelope payload after signing; the
    registry has no referrers API, so the fallback tag index is updated here.
    """
    target = sig_repo or repo
    statement = in_toto_statement(subject_digest or image_digest, annotations=annotations,
                                  predicate_type=predicate_type)
    signed = pae(payload_type, statement)
    signature = key.sign(signed, hash)
    # Trailing whitespace keeps the JSON valid, so only the signature check can catch it.
    carried = statement + b" " if tamper_payload else statement
    bundle = sigstore_bundle(dsse_envelope(carried, payload_type, [signature]), key.hint)
    bundle_digest = sha256_digest(bundle)
    subject = {"mediaType": image_media_type, "size": image_size, "digest": image_digest}
    manifest = referrer_manifest((bundle_digest, len(bundle)), subject,
                                 predicate_type=predicate_type, created=created)
    artifact_type = BUNDLE_MEDIA_TYPE if index_artifact_type is None else index_artifact_type
    referrer_digest, index, index_digest = attach_referrer(http, target, image_digest, manifest, [bundle], artifact_type)
    tag = fallback_tag(image_digest)
    return BundleSignature(sig_repo=target, statement=statement, envelope_payload=carried,
                           pae=signed, signature=signature, bundle=bundle,
                           bundle_digest=bundle_digest, referrer_digest=referrer_digest,
                           referrer_manifest=manifest, fallback_tag=tag, index=index,
                           index_digest=index_digest)
