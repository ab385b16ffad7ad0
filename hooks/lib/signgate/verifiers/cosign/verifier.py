"""The cosign verifier type: legacy `.sig` signatures and sigstore bundles, with transparency proofs.

The verification itself lives in flow.py (and legacy.py, bundle.py, rekor.py, certificates.py beside it); this
module is its side of the contract in interface.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ...errors import InvalidReference
from ...fields import clip, short
from ...reference import parse_reference, registry_endpoint
from ...settings import MULTI_ARCH_CHOICES, RANGES, TLOG_CHOICES
from ..interface import Endpoint, RuleContext

# Deferred imports: flow.py (signatures, bundles, the registry client's types) loads when an image
# is verified, not when the configuration is parsed (config.py asks this module for its parser).

if TYPE_CHECKING:
    from ...fields import Section
    from ...keyring import KeyRing
    from ...reference import ImageReference
    from ...registry import RegistryClient
    from ...settings import Config, Rule
    from ...verdict import ImageVerdict


class CosignVerifier:
    type_name = "cosign"
    # Kept directly on a rule (and on settings.Rule), as they were before verifier types existed.
    fields = (
        "keys", "threshold", "required", "annotations", "checkIdentity", "signatureRepository", "tlog", "multiArch",
        "identities", "trustedRoot", "certificateAuthority", "ignoreSct",
    )

    def evaluate(self, config: Config, rule: Rule, ref: ImageReference, client: RegistryClient, keyring: KeyRing) -> ImageVerdict:
        from .flow import evaluate_cosign

        return evaluate_cosign(config, rule, ref, client, keyring)

    def parse_settings(self, section: Section, context: RuleContext) -> Mapping[str, Any]:
        keys = context.keys
        rule_keys = tuple(section.string_list("keys", ()))
        threshold = section.integer("threshold", 1, *RANGES["policy[].threshold"])
        required = tuple(section.string_list("required", ()))
        annotations = section.string_map("annotations")
        check_identity = section.boolean("checkIdentity", False)
        signature_repository = section.string("signatureRepository", None)
        tlog = section.choice("tlog", TLOG_CHOICES, "ignore")
        multi_arch = section.choice("multiArch", MULTI_ARCH_CHOICES, "exact")
        identities = tuple(section.string_list("identities", ()))
        trusted_root = section.string("trustedRoot", None)
        certificate_authority = section.string("certificateAuthority", None)
        ignore_sct = section.boolean("ignoreSct", False)
        if context.action != "verify":
            for name, value in (("keys", rule_keys), ("required", required), ("annotations", annotations), ("identities", identities)):
                if value:
                    section.fail(name, f"has no meaning for a static {context.action!r} rule")
        else:
            if not rule_keys and not identities:
                # A rule that names identities and no keys trusts certificates only: no `default` key.
                if "default" not in keys:
                    section.fail("keys", "is required for a verify rule (no key is named 'default')")
                rule_keys = ("default",)
            for name in rule_keys:
                if name not in keys:
                    known = ", ".join(sorted(keys)) or "none"
                    section.fail("keys", f"names unknown key {short(name)} (keys: {clip(known, 200)})")
            for name in identities:
                if name not in context.identities:
                    known = ", ".join(sorted(context.identities)) or "none"
                    section.fail("identities", f"names unknown identity {short(name)} (identities: {clip(known, 200)})")
            for name in required:
                if name not in keys and name not in context.identities:
                    known = ", ".join(sorted(keys)) or "none"
                    section.fail("required", f"names unknown key {short(name)} (keys: {clip(known, 200)})")
            if len(set(rule_keys)) != len(rule_keys):
                section.fail("keys", "lists a key twice")
            if len(set(identities)) != len(identities):
                section.fail("identities", "lists an identity twice")
            missing = [name for name in required if name not in rule_keys and name not in identities]
            if missing:
                section.fail("required", f"{', '.join(missing)} must also be listed in keys" + (" or identities" if identities else ""))
            signers = len(rule_keys) + len(identities)
            if threshold > signers:
                what = f"{len(rule_keys)} key(s)" if not identities else f"{signers} signer(s) (keys and identities)"
                section.fail("threshold", f"is {threshold}, but the rule lists only {what}")
            if signature_repository is not None:
                signature_repository = _signature_repository(section, signature_repository, context.insecure)
            _verify_certificate_settings(section, context, identities, trusted_root, certificate_authority, ignore_sct)
            if tlog == "required" and not context.rekor_keys and trusted_root is None:
                section.fail("tlog", "is 'required', but no rekorKeys are configured to check the proofs with")
        return {
            "keys": rule_keys,
            "threshold": threshold,
            "required": required,
            "annotations": annotations,
            "check_identity": check_identity,
            "signature_repository": signature_repository,
            "tlog": tlog,
            "multi_arch": multi_arch,
            "identities": identities,
            "trusted_root": trusted_root,
            "certificate_authority": certificate_authority,
            "ignore_sct": ignore_sct,
        }

    def endpoints(self, rule: Rule, insecure: frozenset[str]) -> set[Endpoint]:
        if not rule.signature_repository:
            return set()
        return {registry_endpoint(parse_reference(rule.signature_repository, insecure).registry, insecure)}

    def trust_material(self, rule: Rule) -> tuple[tuple[str, str], ...]:
        found = []
        if rule.trusted_root:
            found.append(("trustedRoots", rule.trusted_root))
        if rule.certificate_authority:
            found.append(("certificateAuthorities", rule.certificate_authority))
        return tuple(found)

    def uses_tag(self, rule: Rule) -> bool:
        # Only when a platform digest may pass through the tag's signed index (flow.py).
        return rule.multi_arch != "exact"

    def key_names(self, rule: Rule) -> tuple[str, ...]:
        return rule.keys

    def trust_files(self, config: Config, rule: Rule) -> list[str]:
        files = [config.keys[name].path for name in rule.keys]
        # Rekor keys also check the inclusion proofs bundles carry under `tlog: ignore`.
        files += [spec.path for spec in config.rekor_keys.values()]
        # The configuration checks these names; .get keeps a rule built by hand from raising here.
        for path in (config.trusted_roots.get(rule.trusted_root or ""), config.certificate_authorities.get(rule.certificate_authority or "")):
            if path:
                files.append(path)
        return files

    def describe(self, rule: Rule) -> list[str]:
        parts = [f"keys={','.join(rule.keys)}", f"threshold={rule.threshold}"]
        if rule.required:
            parts.append(f"required={','.join(rule.required)}")
        if rule.annotations:
            parts.append("annotations=" + ",".join(f"{k}={v}" for k, v in rule.annotations))
        if rule.check_identity:
            parts.append("checkIdentity")
        if rule.signature_repository:
            parts.append(f"signatureRepository={rule.signature_repository}")
        if rule.identities:
            parts.append(f"identities={','.join(rule.identities)}")
        if rule.trusted_root:
            parts.append(f"trustedRoot={rule.trusted_root}")
        if rule.certificate_authority:
            parts.append(f"certificateAuthority={rule.certificate_authority}")
        if rule.ignore_sct:
            parts.append("ignoreSct")
        return parts


def _verify_certificate_settings(
    section: Section, context: RuleContext, identities: tuple[str, ...], trusted_root: str | None, authority: str | None, ignore_sct: bool
) -> None:
    if not identities:
        for name, value in (("trustedRoot", trusted_root), ("certificateAuthority", authority), ("ignoreSct", ignore_sct)):
            if value:
                section.fail(name, "has no meaning without identities (certificate signers)")
        return
    if (trusted_root is None) == (authority is None):
        section.fail("identities", "need exactly one of trustedRoot and certificateAuthority: the CAs their certificates must chain to")
    if trusted_root is not None and trusted_root not in context.trusted_roots:
        known = ", ".join(sorted(context.trusted_roots)) or "none"
        section.fail("trustedRoot", f"names unknown trusted root {short(trusted_root)} (trustedRoots: {clip(known, 200)})")
    if authority is not None:
        if authority not in context.certificate_authorities:
            known = ", ".join(sorted(context.certificate_authorities)) or "none"
            section.fail("certificateAuthority", f"names unknown certificate authority {short(authority)} (certificateAuthorities: {clip(known, 200)})")
        if not ignore_sct:
            # As cosign with --certificate-chain: a PEM CA bundle names no CT log to check SCTs with.
            section.fail("ignoreSct", "must be true with a certificateAuthority: a PEM CA bundle has no CT log keys to check certificate SCTs with (cosign's --insecure-ignore-sct)")


def _signature_repository(section: Section, value: str, insecure: frozenset[str]) -> str:
    """The repository in canonical form (registry/repository), as image names are."""
    try:
        ref = parse_reference(value, insecure)
    except InvalidReference as exc:
        section.fail("signatureRepository", str(exc))
    if not ref.tag_defaulted:
        section.fail("signatureRepository", "must be a repository name without tag or digest")
    return ref.written_name
