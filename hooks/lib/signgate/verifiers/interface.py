"""The contract every verifier type keeps, and that the rest of signgate asks through.

A verifier type is named by a rule's `type`; verifiers/__init__.py maps the name to the object
that implements this contract. Code outside the verifier (decision, cache, hook, cli and the
network guard, through decision) never reads another type's rule fields: it asks these methods.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Protocol

if TYPE_CHECKING:
    from ..fields import Section
    from ..keyring import KeyRing
    from ..reference import ImageReference
    from ..registry import RegistryClient
    from ..settings import Config, KeySpec, Rule
    from ..verdict import ImageVerdict

Endpoint = tuple[str, int]  # (canonical host, port), as reference.canonical_endpoint returns


@dataclass(frozen=True)
class RuleContext:
    """What a verifier's settings parser may consult beyond the rule's own fields."""

    action: str  # verify, allow or deny: a static rule may carry no verifier settings
    keys: Mapping[str, KeySpec]  # the configuration's `keys`, by name
    rekor_keys: Mapping[str, KeySpec]  # the configuration's `rekorKeys`, by name
    insecure: frozenset[str]  # registries.insecure, canonical
    identities: Mapping[str, Any] = field(default_factory=dict)  # the configuration's `identities`, by name
    trusted_roots: Mapping[str, str] = field(default_factory=dict)  # `trustedRoots`: name -> path
    certificate_authorities: Mapping[str, str] = field(default_factory=dict)  # `certificateAuthorities`: name -> path


class Verifier(Protocol):
    type_name: str  # the rule's `type` that selects this verifier
    fields: tuple[str, ...]  # the rule fields (as written in the YAML) this type reads

    def parse_settings(self, section: Section, context: RuleContext) -> Mapping[str, Any]:
        """Read this type's fields from a rule's section; return them as `settings.Rule` attributes.

        Errors are raised through `section.fail`, so they carry the file and the field path. The
        caller checks afterwards that no field is left unread.
        """

    def evaluate(self, config: Config, rule: Rule, ref: ImageReference, client: RegistryClient, keyring: KeyRing) -> ImageVerdict:
        """Verify one image under one rule. Raises nothing: every failure becomes a verdict."""

    def endpoints(self, rule: Rule, insecure: frozenset[str]) -> set[Endpoint]:
        """Hosts beyond the image's own registry that the rule may contact (for the SSRF guard)."""

    def trust_material(self, rule: Rule) -> tuple[tuple[str, str], ...]:
        """The named trust material the rule uses, as (section, name): `trustedRoots` or
        `certificateAuthorities` (for the expiry gauge)."""

    def uses_tag(self, rule: Rule) -> bool:
        """Whether a verdict depends on the tag as well as the resolved digest (for cache keys)."""

    def key_names(self, rule: Rule) -> tuple[str, ...]:
        """Names in the configuration's `keys` the rule reads (for cache keys)."""

    def trust_files(self, config: Config, rule: Rule) -> list[str]:
        """Paths of every key and trust file a verdict under the rule depends on (for the fast path)."""

    def describe(self, rule: Rule) -> list[str]:
        """The rule's verifier settings as `name=value` words, for `signgate config`."""
