"""The notaryv1 verifier type: Docker Content Trust data on a Notary server (see notary.py).

This module is notary.py's side of the contract in interface.py.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

from ..errors import InvalidReference, SigngateError
from ..reference import canonical_endpoint
from ..verdict import ImageVerdict
from .interface import Endpoint

if TYPE_CHECKING:
    from ..keyring import KeyRing
    from ..reference import ImageReference
    from ..registry import RegistryClient
    from ..settings import Config, Rule

# Deferred imports: notary.py (TUF metadata and its checks) loads only when a notaryv1 rule applies.


class NotaryV1Verifier:
    type_name = "notaryv1"

    def verify(self, config: Config, rule: Rule, ref: ImageReference, client: RegistryClient, keyring: KeyRing) -> ImageVerdict:
        from ..notary import verify_notary

        try:
            return verify_notary(config, rule, ref, client, keyring)
        except SigngateError as exc:
            return ImageVerdict(False, exc.reason, str(exc), log_detail=exc.log_detail)

    def endpoints(self, rule: Rule, insecure: frozenset[str]) -> set[Endpoint]:
        if rule.notary is None:
            return set()
        parts = urllib.parse.urlsplit(rule.notary.server)
        try:
            return {canonical_endpoint(parts.netloc, parts.scheme)}
        except InvalidReference:
            return set()  # never named, so refused when contacted, saying why

    def key_names(self, rule: Rule) -> tuple[str, ...]:
        return rule.notary.root_keys if rule.notary is not None else ()

    def trust_files(self, config: Config, rule: Rule) -> list[str]:
        return [config.keys[name].path for name in self.key_names(rule)]

    def describe(self, rule: Rule) -> list[str]:
        if rule.notary is None:
            return []
        parts = [f"type={rule.type}", f"server={rule.notary.server}", f"rootKeys={','.join(rule.notary.root_keys)}"]
        if rule.notary.delegations:
            parts.append(f"delegations={','.join(rule.notary.delegations)}")
        if rule.notary.ca_bundle:
            parts.append(f"caBundle={rule.notary.ca_bundle}")
        return parts
