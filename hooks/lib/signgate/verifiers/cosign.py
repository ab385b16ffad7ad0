"""The cosign verifier type: legacy `.sig` signatures and sigstore bundles, with transparency proofs.

The verification itself lives in verify.py (and cosign.py, bundle.py, rekor.py beside it); this
module is its side of the contract in interface.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from ..errors import InvalidReference
from ..fields import clip, short
from ..reference import parse_reference, registry_endpoint
from ..settings import MULTI_ARCH_CHOICES, RANGES, TLOG_CHOICES
from .interface import Endpoint, RuleContext

# Deferred imports: verify.py (signatures, bundles, the registry client's types) loads when an image
# is verified, not when the configuration is parsed (config.py asks this module for its parser).

if TYPE_CHECKING:
    from ..fields import Section
    from ..keyring import KeyRing
    from ..reference import ImageReference
    from ..registry import RegistryClient
    from ..settings import Config, Rule
    from ..verdict import ImageVerdict


class CosignVerifier:
    type_name = "cosign"
    # Kept directly on a rule (and on settings.Rule), as they were before verifier types existed.
    fields = ("keys", "threshold", "required", "annotations", "checkIdentity", "signatureRepository", "tlog", "multiArch")

    def verify(self, config: Config, rule: Rule, ref: ImageReference, client: RegistryClient, keyring: KeyRing) -> ImageVerdict:
        from ..verify import verify_cosign

        return verify_cosign(config, rule, ref, client, keyring)

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
        if context.action != "verify":
            for name, value in (("keys", rule_keys), ("required", required), ("annotations", annotations)):
                if value:
                    section.fail(name, f"has no meaning for a static {context.action!r} rule")
        else:
            if not rule_keys:
                if "default" not in keys:
                    section.fail("keys", "is required for a verify rule (no key is named 'default')")
                rule_keys = ("default",)
            for name in rule_keys + required:
                if name not in keys:
                    known = ", ".join(sorted(keys)) or "none"
                    section.fail("keys" if name in rule_keys else "required", f"names unknown key {short(name)} (keys: {clip(known, 200)})")
            if len(set(rule_keys)) != len(rule_keys):
                section.fail("keys", "lists a key twice")
            missing = [name for name in required if name not in rule_keys]
            if missing:
                section.fail("required", f"{', '.join(missing)} must also be listed in keys")
            if threshold > len(rule_keys):
                section.fail("threshold", f"is {threshold}, but the rule lists only {len(rule_keys)} key(s)")
            if signature_repository is not None:
                signature_repository = _signature_repository(section, signature_repository, context.insecure)
            if tlog == "required" and not context.rekor_keys:
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
        }

    def endpoints(self, rule: Rule, insecure: frozenset[str]) -> set[Endpoint]:
        if not rule.signature_repository:
            return set()
        return {registry_endpoint(parse_reference(rule.signature_repository, insecure).registry, insecure)}

    def key_names(self, rule: Rule) -> tuple[str, ...]:
        return rule.keys

    def trust_files(self, config: Config, rule: Rule) -> list[str]:
        files = [config.keys[name].path for name in rule.keys]
        # Rekor keys also check the inclusion proofs bundles carry under `tlog: ignore`.
        files += [spec.path for spec in config.rekor_keys.values()]
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
        return parts


def _signature_repository(section: Section, value: str, insecure: frozenset[str]) -> str:
    """The repository in canonical form (registry/repository), as image names are."""
    try:
        ref = parse_reference(value, insecure)
    except InvalidReference as exc:
        section.fail("signatureRepository", str(exc))
    if not ref.tag_defaulted:
        section.fail("signatureRepository", "must be a repository name without tag or digest")
    return ref.written_name
