"""The notaryv1 verifier type: Docker Content Trust data on a Notary server, checked in Python
against pinned root keys, without a notary binary.

A `notaryv1` rule trusts an image when the trust collection of its GUN (`<registry>/<repository>`)
on a Notary server signs the digest that the registry serves: roles.py checks the chain of signed
files, decision.py the target. This module is the package's side of the contract in
verifiers/interface.py (settings, verify, endpoints, key and trust files, describe) and the rule's
flow (`evaluate_notary`).
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

from ...errors import InvalidReference, KeyLoadError, NotFound, SigngateError
from ...fields import ca_bundle_problem, clip, short
from ...reference import canonical_endpoint
from ...verdict import ImageVerdict
from ..interface import Endpoint, RuleContext

if TYPE_CHECKING:
    from datetime import datetime

    from ...fields import Section
    from ...keyring import KeyRing
    from ...reference import ImageReference
    from ...registry import RegistryClient
    from ...settings import Config, Rule

# Deferred imports: the trust-data modules (TUF metadata, keys, roles, the fetcher) and datetime
# load only when a notaryv1 rule applies; `import signgate.config` reaches this module through
# the type registry and must stay light.


@dataclass(frozen=True)
class NotarySettings:
    """A notaryv1 rule's `notary` section (in `Rule.settings`): Docker Content Trust data for the
    image's GUN on a Notary server."""

    server: str  # https://notary.example.com[:port]
    root_keys: tuple[str, ...]  # names in `keys`: pinned root public keys (PEM)
    ca_bundle: str | None = None  # CA for the Notary server's TLS; default: the system CAs
    delegations: tuple[str, ...] = ()  # roles that must have signed the target, e.g. targets/releases


def notary_settings(rule: Rule) -> NotarySettings | None:
    """The rule's Notary settings; None for a rule of another type."""
    return rule.settings if isinstance(rule.settings, NotarySettings) else None


class NotaryV1Verifier:
    type_name = "notaryv1"
    fields = ("notary",)

    def parse_settings(self, section: Section, context: RuleContext) -> Mapping[str, Any]:
        if context.action != "verify":
            section.fail("type", "notaryv1 applies to verify rules only")
        notary = section.section("notary")
        server = notary.string("server", None, required=True)
        if not server.startswith(("https://", "http://")) or server.rstrip("/").count("/") > 2:
            notary.fail("server", f"must be a URL like https://notary.example.com:4443, got {short(server)}")
        try:  # the host as registries are read (reference.canonical_endpoint)
            parts = urllib.parse.urlsplit(server)
            canonical_endpoint(parts.netloc, parts.scheme)
        except (InvalidReference, ValueError) as exc:
            notary.fail("server", f"{short(server)}: {exc}")
        root_keys = tuple(notary.string_list("rootKeys", ()))
        if not root_keys:
            notary.fail("rootKeys", "is required: the names of the pinned root public keys (in keys)")
        for name in root_keys:
            if name not in context.keys:
                known = clip(", ".join(sorted(context.keys)) or "none", 200)
                notary.fail("rootKeys", f"names unknown key {short(name)} (keys: {known})")
        ca_bundle = notary.string("caBundle", None)
        if ca_bundle is not None:
            if not (os.path.isfile(ca_bundle) and os.access(ca_bundle, os.R_OK)):
                notary.fail("caBundle", f"cannot read {ca_bundle} (it must be a readable file)")
            problem = ca_bundle_problem(ca_bundle)
            if problem:
                notary.fail("caBundle", problem)
        delegations = tuple(notary.string_list("delegations", ()))
        for role in delegations:
            if not role.startswith("targets/") or role.endswith("/"):
                notary.fail("delegations", f"{short(role)} is not a delegation role (e.g. targets/releases)")
        notary.done()
        settings = NotarySettings(server=server.rstrip("/"), root_keys=root_keys, ca_bundle=ca_bundle, delegations=delegations)
        return {"settings": settings}

    def evaluate(self, config: Config, rule: Rule, ref: ImageReference, client: RegistryClient, keyring: KeyRing) -> ImageVerdict:
        return evaluate_notary(config, rule, ref, client, keyring)

    def endpoints(self, rule: Rule, insecure: frozenset[str]) -> set[Endpoint]:
        settings = notary_settings(rule)
        if settings is None:
            return set()
        parts = urllib.parse.urlsplit(settings.server)
        try:
            return {canonical_endpoint(parts.netloc, parts.scheme)}
        except InvalidReference:
            return set()  # never named, so refused when contacted, saying why

    def trust_material(self, rule: Rule) -> tuple[tuple[str, str], ...]:
        return ()  # its trust is the pinned root keys, which have no validity window to watch

    def uses_tag(self, rule: Rule) -> bool:
        # The trust data is looked up by tag, but a verdict is about the digest it resolves to, as
        # for cosign rules: another tag with the same signed digest pulls the same bytes.
        return False

    def key_names(self, rule: Rule) -> tuple[str, ...]:
        settings = notary_settings(rule)
        return settings.root_keys if settings is not None else ()

    def trust_files(self, config: Config, rule: Rule) -> list[str]:
        return [config.keys[name].path for name in self.key_names(rule)]

    def describe(self, rule: Rule) -> list[str]:
        settings = notary_settings(rule)
        if settings is None:
            return []
        parts = [f"type={rule.type}", f"server={settings.server}", f"rootKeys={','.join(settings.root_keys)}"]
        if settings.delegations:
            parts.append(f"delegations={','.join(settings.delegations)}")
        if settings.ca_bundle:
            parts.append(f"caBundle={settings.ca_bundle}")
        return parts


def evaluate_notary(
    config: Config,
    rule: Rule,
    ref: ImageReference,
    client: RegistryClient,
    keyring: KeyRing,
    now: datetime | None = None,
) -> ImageVerdict:
    """The verdict on one image under a notaryv1 rule, at `now` (default: the current time).
    Raises nothing: a failure is a verdict with its NotaryError's reason and message; a pass names
    the pinned keys and the signers."""
    try:
        return _verified(config, rule, ref, client, keyring, now)
    except SigngateError as exc:
        return ImageVerdict(False, exc.reason, str(exc), log_detail=exc.log_detail)


def _verified(
    config: Config,
    rule: Rule,
    ref: ImageReference,
    client: RegistryClient,
    keyring: KeyRing,
    now: datetime | None,
) -> ImageVerdict:
    """evaluate_notary's work: the passing verdict, or a failing one for what is not Notary's
    doing (an unreadable pinned key, an image the registry does not have); raises SigngateError."""
    from datetime import datetime, timezone

    from .decision import short_digest, verify_target
    from .errors import NoTrustData, NotaryError
    from .keys import short_id
    from .metadata import format_time
    from .transport import NotaryFetcher
    from .trust_data import TrustCollection

    settings = notary_settings(rule)
    if settings is None:
        raise NotaryError(f"{rule.label} has type notaryv1 but no notary settings")
    try:
        pinned = keyring.get(settings.root_keys)
    except KeyLoadError as exc:
        return ImageVerdict(False, exc.reason, f"cannot check trust data: {exc}")
    gun = ref.name
    when = now or datetime.now(timezone.utc)
    subject = f"digest {short_digest(ref.digest)}" if ref.digest else f"the tag {ref.tag or 'latest'!r}"
    fetch = NotaryFetcher(settings.server, gun, deadline=client.deadline, limits=config.limits,
                          ca_bundle=settings.ca_bundle, client=client)
    try:
        try:
            collection = TrustCollection(gun, fetch, pinned, when, max_bytes=config.limits.max_manifest_bytes)
        except NoTrustData as exc:
            raise NoTrustData(f"no trust data for {subject}: {exc}") from None
        try:
            manifest = client.get_manifest(ref.api_host, ref.repository, ref.digest or ref.tag or "latest")
        except NotFound:
            what = f"digest {ref.digest}" if ref.digest else f"tag {ref.tag!r}"
            return ImageVerdict(False, "image-not-found", f"the registry has no image {ref.name} with {what}")
        accepted = verify_target(
            collection,
            tag=ref.tag or "latest",
            digest=ref.digest,
            served_digest=manifest.digest,
            served_size=manifest.size,
            required=settings.delegations,
        )
    finally:
        fetch.close()
    root = collection.root
    details = (
        f"trust data of {gun} on {settings.server}: root.json v{root.meta.version} signed by pinned key(s) "
        f"{', '.join(root.pinned_by)} ({', '.join(short_id(k.canonical_id) for k in root.signing_keys)})",
        f"timestamp v{collection.timestamp.version} expires {format_time(collection.timestamp.expires)}",
        accepted.describe(),
    )
    return ImageVerdict(True, "verified", "", manifest.digest, root.pinned_by, details)
