"""The notaryv1 verifier type: Docker Content Trust data on a Notary server (see notary.py).

This module is notary.py's side of the contract in interface.py.
"""

from __future__ import annotations

import os
import urllib.parse
from typing import TYPE_CHECKING, Any, Mapping

from ..errors import InvalidReference, SigngateError
from ..fields import ca_bundle_problem, clip, short
from ..reference import canonical_endpoint
from ..settings import NotarySettings
from ..verdict import ImageVerdict
from .interface import Endpoint, RuleContext

if TYPE_CHECKING:
    from ..fields import Section
    from ..keyring import KeyRing
    from ..reference import ImageReference
    from ..registry import RegistryClient
    from ..settings import Config, Rule

# Deferred imports: notary.py (TUF metadata and its checks) loads only when a notaryv1 rule applies.


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
        return {"notary": settings}

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
