"""The cosign verifier type: legacy `.sig` signatures and sigstore bundles, with transparency proofs.

The verification itself lives in verify.py (and cosign.py, bundle.py, rekor.py beside it); this
module is its side of the contract in interface.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..reference import parse_reference, registry_endpoint
from ..verify import verify_cosign
from .interface import Endpoint

if TYPE_CHECKING:
    from ..settings import Config, Rule


class CosignVerifier:
    type_name = "cosign"
    verify = staticmethod(verify_cosign)

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
