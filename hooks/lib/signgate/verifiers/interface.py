"""The contract every verifier type keeps, and that the rest of signgate asks through.

A verifier type is named by a rule's `type`; verifiers/__init__.py maps the name to the object
that implements this contract. Code outside the verifier (decision, cache, hook, cli and the
network guard, through decision) never reads another type's rule fields: it asks these methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..keyring import KeyRing
    from ..reference import ImageReference
    from ..registry import RegistryClient
    from ..settings import Config, Rule
    from ..verdict import ImageVerdict

Endpoint = tuple[str, int]  # (canonical host, port), as reference.canonical_endpoint returns


class Verifier(Protocol):
    type_name: str  # the rule's `type` that selects this verifier

    def verify(self, config: Config, rule: Rule, ref: ImageReference, client: RegistryClient, keyring: KeyRing) -> ImageVerdict:
        """Verify one image under one rule. Raises nothing: every failure becomes a verdict."""

    def endpoints(self, rule: Rule, insecure: frozenset[str]) -> set[Endpoint]:
        """Hosts beyond the image's own registry that the rule may contact (for the SSRF guard)."""

    def key_names(self, rule: Rule) -> tuple[str, ...]:
        """Names in the configuration's `keys` the rule reads (for cache keys)."""

    def trust_files(self, config: Config, rule: Rule) -> list[str]:
        """Paths of every key and trust file a verdict under the rule depends on (for the fast path)."""

    def describe(self, rule: Rule) -> list[str]:
        """The rule's verifier settings as `name=value` words, for `signgate config`."""
