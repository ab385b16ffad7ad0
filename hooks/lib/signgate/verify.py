"""Verifying one image against one rule: resolve, find signatures, check them, count keys.

This is the only place where policy meets the registry. The counting rule: a rule passes when
signatures that satisfy every check were made by at least `threshold` distinct keys (distinct by
public-key fingerprint, so one key configured under two names counts once) and every `required`
key is among them.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping, Sequence

from .config import Config, KeySpec, Rule
from .cosign import (
    SIG_MANIFEST_TYPES,
    SIGNATURE_ANNOTATION,
    Requirements,
    SignatureCheck,
    check_legacy_signature,
    signature_layers,
    signature_tag,
)
from .errors import DeadlineExceeded, KeyLoadError, NotFound, RegistryError, SigngateError
from .keys import PublicKey, load_public_key
from .reference import ImageReference, parse_reference

if TYPE_CHECKING:  # the client (and requests) load only when a signature must be fetched
    from .registry import RegistryClient


@dataclass(frozen=True)
class ImageVerdict:
    passed: bool
    reason: str  # stable token for logs and metrics
    message: str  # for kubectl output; empty when passed with nothing to say
    digest: str | None = None
    verified_keys: tuple[str, ...] = ()
    details: tuple[str, ...] = field(default=())  # what was searched and found, for logs


class KeyRing:
    """Public keys loaded on first use and shared by the threads of one request."""

    def __init__(self, specs: Mapping[str, KeySpec]) -> None:
        self._specs = specs
        self._loaded: dict[str, PublicKey] = {}
        self._lock = threading.Lock()

    def get(self, names: Sequence[str]) -> list[PublicKey]:
        with self._lock:
            for name in names:
                if name not in self._loaded:
                    self._loaded[name] = load_public_key(self._specs[name])
            return [self._loaded[name] for name in names]


def requirements_for(rule: Rule, ref: ImageReference) -> Requirements:
    return Requirements(annotations=rule.annotations, identity=ref.name if rule.check_identity else None)


def signature_location(rule: Rule, ref: ImageReference) -> tuple[str, str]:
    """(api host, repository) where the rule's signatures are stored."""
    if rule.signature_repository:
        target = parse_reference(rule.signature_repository)
        return target.api_host, target.repository
    return ref.api_host, ref.repository


def verify_image(config: Config, rule: Rule, ref: ImageReference, client: RegistryClient, keyring: KeyRing) -> ImageVerdict:
    """Resolve and verify one image. Raises nothing: every failure becomes a verdict."""
    try:
        keys = keyring.get(rule.keys)
    except KeyLoadError as exc:
        return ImageVerdict(False, exc.reason, f"cannot check signatures: {exc}")
    try:
        return _verify(config, rule, ref, client, keys)
    except DeadlineExceeded as exc:
        return ImageVerdict(False, exc.reason, str(exc))
    except SigngateError as exc:
        return ImageVerdict(False, exc.reason, str(exc))


def _verify(config: Config, rule: Rule, ref: ImageReference, client: RegistryClient, keys: list[PublicKey]) -> ImageVerdict:
    try:
        manifest = client.get_manifest(ref.api_host, ref.repository, ref.digest or ref.tag or "latest")
    except NotFound:
        what = f"digest {ref.digest}" if ref.digest else f"tag {ref.tag!r}"
        return ImageVerdict(False, "image-not-found", f"the registry has no image {ref.name} with {what}")
    digest = manifest.digest
    checks, searched = legacy_signatures(config, rule, ref, digest, client, keys)
    return evaluate(rule, keys, digest, checks, searched)


def legacy_signatures(
    config: Config, rule: Rule, ref: ImageReference, digest: str, client: RegistryClient, keys: list[PublicKey]
) -> tuple[list[SignatureCheck], str]:
    host, repository = signature_location(rule, ref)
    tag = signature_tag(digest)
    searched = f"legacy tag {host}/{repository}:{tag}"
    try:
        sig_manifest = client.get_manifest(host, repository, tag, accept=", ".join(SIG_MANIFEST_TYPES))
    except NotFound:
        return [], searched
    try:
        layers, _skipped = signature_layers(sig_manifest.data, config.limits.max_signature_layers)
    except ValueError as exc:
        raise RegistryError(f"{searched}: {exc}") from None
    requirements = requirements_for(rule, ref)
    checks = []
    for number, layer in enumerate(layers):
        source = f"{tag} layer {number}"
        if layer.size > config.limits.max_blob_bytes:
            checks.append(SignatureCheck("legacy", source, (), f"its payload is {layer.size} bytes, over the limit"))
            continue
        payload = client.get_blob(host, repository, layer.digest)
        if len(payload) != layer.size:
            checks.append(SignatureCheck("legacy", source, (), "its payload size differs from the manifest"))
            continue
        checks.append(
            check_legacy_signature(source, payload, layer.annotations.get(SIGNATURE_ANNOTATION), keys, digest, requirements)
        )
    return checks, searched


def evaluate(rule: Rule, keys: list[PublicKey], digest: str, checks: list[SignatureCheck], searched: str) -> ImageVerdict:
    verified: dict[str, str] = {}  # fingerprint -> key name
    for check in checks:
        for key in check.keys:
            verified.setdefault(key.fingerprint, key.name)
    by_name = {key.name: key for key in keys}
    signers = tuple(sorted(set(verified.values())))
    missing_required = [name for name in rule.required if by_name[name].fingerprint not in verified]
    details = (f"searched {searched}",) + tuple(
        f"{c.source}: {'valid' if c.counts else c.problem}" for c in checks
    )
    key_list = ", ".join(rule.keys)

    if len(verified) >= rule.threshold and not missing_required:
        return ImageVerdict(True, "verified", "", digest, signers, details)
    if not checks:
        return ImageVerdict(False, "no-signature", f"no signature found (searched {searched})", digest, (), details)
    found = _count(len(checks), "legacy signature")
    if not verified:
        informative = [c for c in checks if c.signed_by and c.problem]
        if informative:
            check = informative[0]
            reason = "digest-mismatch" if "resolves to" in (check.problem or "") else "claims-rejected"
            text = f"{found}; none is valid: signature by key {check.signed_by[0]}: {check.problem}"
            return ImageVerdict(False, reason, text, digest, (), details)
        return ImageVerdict(
            False, "no-valid-signature", f"{found}; none verifies with key(s) {key_list}", digest, (), details
        )
    if missing_required:
        text = (
            f"required key(s) {', '.join(missing_required)} did not sign "
            f"(verified by: {', '.join(signers)})"
        )
        return ImageVerdict(False, "required-key-missing", text, digest, signers, details)
    text = (
        f"signed by {len(verified)} of the {rule.threshold} required keys "
        f"(verified by: {', '.join(signers)}; trusted: {key_list})"
    )
    return ImageVerdict(False, "threshold-not-met", text, digest, signers, details)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'} found"
