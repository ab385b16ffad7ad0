"""Verifying one image against one rule: resolve, find signatures, check them, count keys.

This is the only place where policy meets the registry.

**Both layouts count.** signgate reads the legacy `sha256-<hex>.sig` manifest and the sigstore
bundles attached as OCI referrers (or listed under the fallback tag `sha256-<hex>`), always both.
A signature that satisfies every check counts whichever layout it is in, and thresholds count
distinct keys across both. cosign v3 differs: it reads `.sig` only when it finds no bundle, so an
image whose bundles are all attestations by another key fails there even with a valid `.sig`.

**Counting.** A rule passes when signatures that satisfy every check were made by at least
`threshold` distinct keys (distinct by public-key fingerprint, so one key configured under two
names counts once) and every `required` key is among them.

**Multi-arch images** (`multiArch`):
- `exact` (default, as cosign): the signature must be on the digest the pod's reference resolves
  to. For a multi-arch tag that is the index digest.
- `index-or-platforms`: an index also passes when every platform manifest it lists is signed
  (tools that sign per platform); and a platform manifest named as `name:tag@sha256:<platform>`
  also passes when the tag resolves to a signed index that lists it. Every platform, not any one:
  the kubelet picks the platform of its node, and that one must be signed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable, Generic, TypeVar

from .bundle import check_bundle, is_bundle_media_type
from ...settings import Config, Rule
from .certificates import CertificateProblem, CertificateRule, identity_signer, trust_from_pem, trust_from_root
from .legacy import (
    CERTIFICATE_ANNOTATION,
    DigestMismatch,
    REKOR_BUNDLE_ANNOTATION,
    SIG_MANIFEST_TYPES,
    SIGNATURE_ANNOTATION,
    Requirements,
    SignatureCheck,
    check_legacy_certificate,
    check_legacy_signature,
    merge_checks,
    signature_layers,
    signature_tag,
)
from ...errors import DeadlineExceeded, KeyLoadError, NotFound, RegistryError, SigngateError
from ...keyring import KeyRing
from ...keys import PublicKey
from ...media_types import OCI_INDEX, OCI_MANIFEST
from ...reference import ImageReference, parse_reference
from .rekor import RekorKeys
from .trust_root import TrustRootError, load_trust_root
from ...verdict import ImageVerdict

if TYPE_CHECKING:  # the client (and requests) load only when a signature must be fetched
    from ...registry import Manifest, RegistryClient

UNKNOWN_PLATFORM = ("unknown", "unknown")
# Registry requests of one verification in flight at once (_fetch_all). At 50 ms RTT each
# request issued after another costs a round trip; issued together they cost one. The bound keeps
# one image with dozens of referrers or layers from opening dozens of connections (and counting
# as dozens against the registry's rate limit) while the other images of the request wait.
MAX_PARALLEL_FETCHES = 8

T = TypeVar("T")


@dataclass(frozen=True)
class Found:
    """Signatures found for one digest, with a description of what was searched."""

    checks: list[SignatureCheck]
    searched: list[str]  # short descriptions for messages
    location: str = ""  # registry/repository searched

    def describe(self) -> str:
        legacy = sum(1 for c in self.checks if c.layout == "legacy")
        bundles = sum(1 for c in self.checks if c.layout == "bundle")
        parts = []
        if bundles:
            parts.append(f"{bundles} bundle{'s' if bundles != 1 else ''}")
        if legacy:
            parts.append(f"{legacy} legacy signature{'s' if legacy != 1 else ''}")
        return " and ".join(parts) + " found"


def requirements_for(rule: Rule, ref: ImageReference, insecure: frozenset[str] = frozenset()) -> Requirements:
    return Requirements(
        annotations=rule.annotations, identity=ref.name if rule.check_identity else None, insecure=insecure
    )


def signature_location(rule: Rule, ref: ImageReference, insecure: frozenset[str] = frozenset()) -> tuple[str, str]:
    """(api host, repository) where the rule's signatures are stored."""
    if rule.signature_repository:
        target = parse_reference(rule.signature_repository, insecure)
        return target.api_host, target.repository
    return ref.api_host, ref.repository


def evaluate_cosign(config: Config, rule: Rule, ref: ImageReference, client: "RegistryClient", keyring: KeyRing) -> ImageVerdict:
    """Resolve and verify one image under a cosign rule. Raises nothing: every failure becomes a verdict."""
    try:
        keys = keyring.get(rule.keys)
        # Loaded whenever configured: a bundle's inclusion proofs are checked even under `tlog: ignore`.
        rekor = keyring.rekor() if rule.tlog == "required" or config.rekor_keys else None
    except KeyLoadError as exc:
        return ImageVerdict(False, exc.reason, f"cannot check signatures: {exc}")
    certs = None
    if rule.identities:
        try:
            certs = certificate_rule(config, rule, rekor)
        except (TrustRootError, CertificateProblem) as exc:
            return ImageVerdict(False, "invalid-config", f"cannot check certificates: {exc}")
        if rule.trusted_root:
            # The root the rule names vouches for its logs whoever signed: a key signer's proof
            # from those logs counts too (within their windows), as cosign verify --key does with
            # a trusted root. Otherwise `tlog: required` with a trustedRoot and no rekorKeys, which
            # the configuration accepts, could never be met by the rule's keys.
            rekor = certs.rekor
    try:
        return _Verification(config, rule, ref, client, keys, rekor, certs).run()
    except DeadlineExceeded as exc:
        return ImageVerdict(False, exc.reason, str(exc))
    except SigngateError as exc:
        return ImageVerdict(False, exc.reason, str(exc), log_detail=exc.log_detail)


class _Verification:
    def __init__(
        self,
        config: Config,
        rule: Rule,
        ref: ImageReference,
        client: "RegistryClient",
        keys: list[PublicKey],
        rekor: RekorKeys | None,
        certs: CertificateRule | None = None,
    ) -> None:
        self.config, self.rule, self.ref, self.client, self.keys, self.rekor = config, rule, ref, client, keys, rekor
        self.certs = certs
        # Who may count: the keys, and each identity once by name.
        self.signers = keys + [identity_signer(name) for name in rule.identities]
        self.sig_host, self.sig_repo = signature_location(rule, ref, config.registries.insecure)
        self.requirements = requirements_for(rule, ref, config.registries.insecure)
        self.require_tlog = rule.tlog == "required"
        self._found: dict[str, _Outcome[Found]] = {}  # find() of a digest, fetched beside its manifest

    def run(self) -> ImageVerdict:
        ref = self.ref
        try:
            manifest = self._image_manifest()
        except NotFound:
            what = f"digest {ref.digest}" if ref.digest else f"tag {ref.tag!r}"
            return ImageVerdict(False, "image-not-found", f"the registry has no image {ref.name} with {what}")
        verdict = evaluate(self.rule, self.signers, manifest.digest, self.find(manifest.digest))
        if verdict.passed or self.rule.multi_arch == "exact":
            return verdict
        if manifest.is_index:
            return self._through_platforms(manifest, verdict)
        return self._through_index(manifest, verdict)

    def _image_manifest(self) -> "Manifest":
        """The manifest the reference names. By digest, the signature lookups need nothing from it,
        so they go out beside it (one round trip instead of two) and find() uses what they found.
        The manifest's own error still comes first, as when it was fetched first."""
        ref = self.ref

        def fetch() -> "Manifest":
            return self.client.get_manifest(ref.api_host, ref.repository, ref.digest or ref.tag or "latest")

        if ref.digest is None:
            return fetch()
        digest = ref.digest
        manifest, found = self._fetch_all([fetch, lambda: self.find(digest)])
        self._found[digest] = found
        return manifest.get()

    def find(self, digest: str) -> Found:
        prefetched = self._found.pop(digest, None)
        if prefetched is not None:
            return prefetched.get()
        host, repository, limits = self.sig_host, self.sig_repo, self.config.limits
        # The three lookups depend only on the digest: issued together they cost one round trip.
        # The fallback tag is fetched beside the referrers probe and used only when the registry
        # has no referrers API; where the API exists this costs one request more, not a round trip.
        sig, referrers, fallback = self._fetch_all([
            lambda: self.client.get_manifest(
                host, repository, signature_tag(digest), accept=", ".join(SIG_MANIFEST_TYPES)
            ),
            lambda: self.client.get_referrers(host, repository, digest, limits.max_referrers),
            lambda: self.client.get_manifest(host, repository, signature_tag(digest, suffix=""), accept=OCI_INDEX),
        ])
        # Checked in the order of the sequential version: a legacy error is reported before a bundle one.
        legacy, legacy_searched = self.legacy(digest, sig)
        bundles, bundle_searched = self.bundles(digest, referrers, fallback)
        return Found(bundles + legacy, [legacy_searched, bundle_searched], f"{self.sig_host}/{self.sig_repo}")

    def _fetch_all(self, calls: "list[Callable[[], T]]") -> "list[_Outcome[T]]":
        """Run `calls` concurrently, at most MAX_PARALLEL_FETCHES at a time, and return their
        outcomes in the order of `calls` (the caller checks them in that order, so results and
        messages do not depend on which answer came first).

        Raises DeadlineExceeded when the deadline passes first. The threads are daemons and every
        request they make is itself bounded by the same deadline, so a stuck one neither blocks
        the answer nor keeps the process alive (as decision.py's verification threads).
        """
        outcomes: list[_Outcome[T]] = [_Outcome() for _ in calls]
        if len(calls) == 1:
            outcomes[0].run(calls[0])
            return outcomes
        pending = iter(range(len(calls)))
        lock = threading.Lock()
        done = threading.Semaphore(0)

        def work() -> None:
            while True:
                with lock:
                    index = next(pending, None)
                if index is None:
                    return
                outcomes[index].run(calls[index])
                done.release()

        for _ in range(min(MAX_PARALLEL_FETCHES, len(calls))):
            threading.Thread(target=work, daemon=True, name="signgate-fetch").start()
        deadline = self.client.deadline
        for _ in calls:
            if not done.acquire(timeout=deadline.remaining()):
                # This wait ends at the very moment decision.py stops waiting for this thread, so
                # either may report it: both say the same (the stuck request itself would have
                # noticed only at its next byte, after the answer had gone).
                raise DeadlineExceeded(
                    f"not verified within {deadline.seconds:g} s (the registry is too slow or unreachable)"
                )
        return outcomes

    # -- legacy layout ----------------------------------------------------------------------

    def legacy(self, digest: str, sig: "_Outcome[Manifest]") -> tuple[list[SignatureCheck], str]:
        host, repository, limits = self.sig_host, self.sig_repo, self.config.limits
        tag = signature_tag(digest)
        searched = f"legacy tag {_short_tag(tag)}"
        try:
            sig_manifest = sig.get()
        except NotFound:
            return [], searched
        try:
            layers, _skipped = signature_layers(sig_manifest.data, limits.max_signature_layers)
        except ValueError as exc:
            raise RegistryError(f"{searched}: {exc}") from None
        # Every payload within the size limit is fetched at once, then checked in layer order.
        wanted = [layer for layer in layers if layer.size <= limits.max_blob_bytes]
        fetched = dict(zip(
            (id(layer) for layer in wanted),
            self._fetch_all([lambda layer=layer: self.client.get_blob(host, repository, layer.digest) for layer in wanted]),
        ))
        checks = []
        for number, layer in enumerate(layers):
            source = f"{tag} layer {number}"
            if layer.size > limits.max_blob_bytes:
                checks.append(SignatureCheck("legacy", source, (), f"its payload is {layer.size} bytes, over the limit"))
                continue
            try:
                payload = fetched[id(layer)].get()
            except RegistryError as exc:
                checks.append(_unreadable("legacy", source, exc))
                continue
            if len(payload) != layer.size:
                checks.append(SignatureCheck("legacy", source, (), "its payload size differs from the manifest"))
                continue
            check = check_legacy_signature(
                source,
                payload,
                layer.annotations.get(SIGNATURE_ANNOTATION),
                self.keys,
                digest,
                self.requirements,
                rekor=self.rekor if self.require_tlog else None,
                rekor_bundle=layer.annotations.get(REKOR_BUNDLE_ANNOTATION),
            )
            if self.certs is not None and layer.annotations.get(CERTIFICATE_ANNOTATION):
                by_certificate = check_legacy_certificate(source, payload, layer.annotations, digest, self.requirements, self.certs)
                check = merge_checks(check, by_certificate) if self.keys else by_certificate
            checks.append(check)
        return checks, searched

    # -- sigstore bundles in referrers ------------------------------------------------------

    def bundles(
        self, digest: str, referrers: "_Outcome[list[dict[str, Any]] | None]", fallback_index: "_Outcome[Manifest]"
    ) -> tuple[list[SignatureCheck], str]:
        host, repository, limits = self.sig_host, self.sig_repo, self.config.limits
        descriptors = referrers.get()
        if descriptors is None:
            fallback = signature_tag(digest, suffix="")
            searched = f"bundles under the fallback tag {_short_tag(fallback)} (no referrers API)"
            try:
                index = fallback_index.get()
            except NotFound:
                return [], searched
            listed = index.data.get("manifests")
            if not isinstance(listed, list):
                # Not an index: no bundles here, but a valid legacy signature must still count.
                problem = "the fallback tag is not an OCI index of referrers"
                return [SignatureCheck("bundle", f"fallback tag {_short_tag(fallback)}", (), problem)], searched
            descriptors = [d for d in listed if isinstance(d, dict)][: limits.max_referrers]
        else:
            searched = "bundles in the referrers API"
        # artifactType in the index is not trusted (older cosign left it empty): every referrer
        # manifest is fetched and kept when it holds exactly one sigstore bundle layer.
        digests = [
            d for d in (descriptor.get("digest") for descriptor in descriptors[: limits.max_referrers])
            if isinstance(d, str) and d.startswith(("sha256:", "sha512:"))
        ]
        # The referrer manifests all at once, then their bundle blobs all at once; checked in order.
        manifests = self._fetch_all([
            lambda d=d: self.client.get_manifest(host, repository, d, accept=OCI_MANIFEST) for d in digests
        ])
        slots: list[SignatureCheck | tuple[str, dict[str, Any]] | None] = []
        for referrer_digest, outcome in zip(digests, manifests):
            source = f"bundle {referrer_digest[:19]}…"
            try:
                referrer = outcome.get()
            except NotFound:
                slots.append(None)  # listed, then deleted: nothing there to count
                continue
            except RegistryError as exc:
                slots.append(_unreadable("bundle", source, exc))
                continue
            layer = _single_bundle_layer(referrer.data)
            if layer is None:
                slots.append(None)
                continue
            size = layer.get("size")
            if not isinstance(size, int) or size > limits.max_blob_bytes:
                slots.append(SignatureCheck("bundle", source, (), "its bundle size is missing or over the limit"))
                continue
            slots.append((source, layer))
        wanted = [slot for slot in slots if isinstance(slot, tuple)]
        blobs = dict(zip(
            (id(slot) for slot in wanted),
            self._fetch_all([lambda layer=layer: self.client.get_blob(host, repository, layer["digest"]) for _, layer in wanted]),
        ))
        checks = []
        for slot in slots:
            if not isinstance(slot, tuple):
                if slot is not None:
                    checks.append(slot)
                continue
            source, layer = slot
            size = layer["size"]
            try:
                data = blobs[id(slot)].get()
            except RegistryError as exc:
                checks.append(_unreadable("bundle", source, exc))
                continue
            if len(data) != size:
                checks.append(SignatureCheck("bundle", source, (), "its bundle size differs from the manifest"))
                continue
            checks.append(check_bundle(source, data, self.keys, digest, self.requirements, self.rekor, self.require_tlog, self.certs))
        return checks, searched

    # -- multi-arch -------------------------------------------------------------------------

    def _through_platforms(self, index: "Manifest", own: ImageVerdict) -> ImageVerdict:
        platforms = _platform_manifests(index.data)
        if not platforms:
            return own
        signers: set[str] = set()
        for digest, platform in platforms:
            verdict = evaluate(self.rule, self.signers, digest, self.find(digest))
            if not verdict.passed:
                text = (
                    f"{own.message}; nor is every platform signed: platform {platform} ({digest}): {verdict.message}"
                )
                return ImageVerdict(False, verdict.reason, text, index.digest, (), own.details + verdict.details)
            signers.update(verdict.verified_keys)
        return ImageVerdict(
            True, "verified-platforms", "", index.digest, tuple(sorted(signers)), own.details + ("every platform manifest is signed",)
        )

    def _through_index(self, manifest: "Manifest", own: ImageVerdict) -> ImageVerdict:
        ref = self.ref
        if ref.digest is None or ref.tag is None or ref.tag_defaulted:
            return own
        try:
            index = self.client.get_manifest(ref.api_host, ref.repository, ref.tag)
        except NotFound:
            return own
        if not index.is_index or manifest.digest not in {d for d, _ in _platform_manifests(index.data, all_entries=True)}:
            return own
        verdict = evaluate(self.rule, self.signers, index.digest, self.find(index.digest))
        if verdict.passed:
            return ImageVerdict(
                True, "verified-index", "", manifest.digest, verdict.verified_keys,
                own.details + (f"signed through index {index.digest}",),
            )
        text = f"{own.message}; nor is its index {index.digest} ({ref.name}:{ref.tag}) signed: {verdict.message}"
        return ImageVerdict(False, own.reason, text, manifest.digest, (), own.details)


def certificate_rule(config: Config, rule: Rule, rekor: RekorKeys | None) -> CertificateRule:
    """The trust a rule's identities are checked against, loaded from the mounted files."""
    logs = rekor if rekor is not None else RekorKeys.of([])
    if rule.trusted_root:
        root = load_trust_root(config.trusted_roots[rule.trusted_root])
        trust = trust_from_root(rule.trusted_root, root, rule.ignore_sct)
        # The trusted root's transparency logs prove entries beside the rekorKeys, each only
        # within its key's validity window.
        logs = logs.with_logs(root.tlogs)
    else:
        assert rule.certificate_authority is not None  # the configuration requires one of the two
        path = config.certificate_authorities[rule.certificate_authority]
        try:
            with open(path, "rb") as handle:
                pem = handle.read(4 * 1024 * 1024)
        except OSError as exc:
            raise CertificateProblem(f"cannot read certificate authority {rule.certificate_authority} ({path}): {exc.strerror}") from None
        trust = trust_from_pem(rule.certificate_authority, path, pem, rule.ignore_sct)
    identities = tuple(config.identities[name] for name in rule.identities)
    return CertificateRule(identities, trust, logs, rule.tlog == "required")


class _Outcome(Generic[T]):
    """What one call of _fetch_all returned or raised; get() gives it back, or raises it again."""

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None

    def run(self, call: "Callable[[], T]") -> None:
        try:
            self.value = call()
        except BaseException as exc:  # re-raised in the verifying thread, where it is handled as before
            self.error = exc

    def get(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value


def _unreadable(layout: str, source: str, exc: RegistryError) -> SignatureCheck:
    """A signature that could not be fetched: one failed candidate, not a failure of the image.

    Anything else attached to the image may still verify it (a broken referrer must not void a
    valid `.sig`, nor one broken `.sig` layer a valid bundle). Counting is monotone, so judging
    by the others can never admit what the missing one would have denied. When nothing verifies,
    evaluate() reports this error and its reason (a transient one is then not cached).
    """
    return SignatureCheck(layout, source, (), str(exc), error=exc.reason)


def _short_tag(tag: str) -> str:
    """sha256-<64 hex>.sig -> sha256-<12 hex>….sig: readable in kubectl output."""
    head, dot, suffix = tag.partition(".")
    return f"{head[:19]}…{dot}{suffix}"


def _single_bundle_layer(manifest: Any) -> dict[str, Any] | None:
    layers = manifest.get("layers") if isinstance(manifest, dict) else None
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
        return None
    layer = layers[0]
    if not is_bundle_media_type(layer.get("mediaType")) or not isinstance(layer.get("digest"), str):
        return None
    return layer


def _platform_manifests(index: Any, all_entries: bool = False) -> list[tuple[str, str]]:
    """(digest, "os/arch") of the runnable platform manifests an index lists.

    Entries for unknown/unknown (buildx attestation manifests) are not images a node can run,
    so they need no signature of their own.
    """
    result = []
    for entry in index.get("manifests") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            continue
        platform = entry.get("platform") if isinstance(entry.get("platform"), dict) else {}
        os_arch = (str(platform.get("os", "unknown")), str(platform.get("architecture", "unknown")))
        if os_arch == UNKNOWN_PLATFORM and not all_entries:
            continue
        variant = f"/{platform['variant']}" if platform.get("variant") else ""
        result.append((entry["digest"], f"{os_arch[0]}/{os_arch[1]}{variant}"))
    return result


def evaluate(rule: Rule, keys: list[PublicKey], digest: str, found: Found) -> ImageVerdict:
    unreadable = [check for check in found.checks if check.error]
    if unreadable:
        read = Found([check for check in found.checks if not check.error], found.searched, found.location)
        verdict = evaluate(rule, keys, digest, read)
        details = verdict.details + tuple(f"{c.source}: could not be read: {c.problem}" for c in unreadable)
        if verdict.passed:
            return replace(verdict, details=details)
        first = unreadable[0]
        text = first.problem or "a signature could not be read"
        if len(unreadable) > 1:
            text += f" (and {len(unreadable) - 1} more signature(s) could not be read)"
        if read.checks:
            text += f"; {verdict.message}"
        return ImageVerdict(False, first.error or "registry-error", text, digest, verdict.verified_keys, details)
    checks = found.checks
    verified: dict[str, str] = {}  # fingerprint -> key name
    for check in checks:
        for key in check.keys:
            verified.setdefault(key.fingerprint, key.name)
    by_name = {key.name: key for key in keys}
    signers = tuple(sorted(set(verified.values())))
    missing_required = [name for name in rule.required if by_name[name].fingerprint not in verified]
    details = tuple(f"searched {s}" for s in found.searched) + tuple(
        f"{c.source}: {'valid' if c.counts else c.problem}" for c in checks
    )
    key_list = ", ".join(rule.keys)
    if rule.identities:
        key_list = ", ".join(filter(None, [key_list, "identities " + ", ".join(rule.identities)]))

    if len(verified) >= rule.threshold and not missing_required:
        return ImageVerdict(True, "verified", "", digest, signers, details)
    if not checks:
        searched = " and ".join(found.searched)
        where = f" in {found.location}" if found.location else ""
        text = f"no signature found{where} for {digest[:19]}… (searched the {searched})"
        return ImageVerdict(False, "no-signature", text, digest, (), details)
    summary = found.describe()
    if not verified:
        informative = [c for c in checks if c.problem and (c.signed_by or c.signer_kind == "certificate")]
        if informative:
            check = informative[0]
            reason = "digest-mismatch" if isinstance(check.problem, DigestMismatch) else "claims-rejected"
            if check.signer_kind == "certificate":
                # Certificate problems are whole sentences: "signed by <subject> (issuer ...), but ...".
                text = f"{summary}; none is valid: {check.problem}"
            else:
                text = f"{summary}; none is valid: signature by key {check.signed_by[0]}: {check.problem}"
            return ImageVerdict(False, reason, text, digest, (), details)
        return ImageVerdict(False, "no-valid-signature", f"{summary}; none verifies with key(s) {key_list}", digest, (), details)
    if missing_required:
        text = f"required key(s) {', '.join(missing_required)} did not sign (verified by: {', '.join(signers)})"
        return ImageVerdict(False, "required-key-missing", text, digest, signers, details)
    text = (
        f"signed by {len(verified)} of the {rule.threshold} required keys "
        f"(verified by: {', '.join(signers)}; trusted: {key_list})"
    )
    return ImageVerdict(False, "threshold-not-met", text, digest, signers, details)
