"""The verifier types, by the name a rule's `type` gives them (the contract: interface.py).

Adding a type is one module (or package) implementing interface.Verifier plus one line in
VERIFIERS: the configuration's `type` choices are this table's names (docs/architecture.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

from .cosign.verifier import CosignVerifier
from .interface import Endpoint, Verifier
from .notaryv1 import NotaryV1Verifier

if TYPE_CHECKING:
    from ..keyring import KeyRing
    from ..reference import ImageReference
    from ..registry import RegistryClient
    from ..settings import Config, Rule
    from ..verdict import ImageVerdict

VERIFIERS: Mapping[str, Verifier] = {
    "cosign": CosignVerifier(),
    "notaryv1": NotaryV1Verifier(),
}


def verifier_for(rule: Rule) -> Verifier:
    return VERIFIERS[rule.type]


def evaluate_image(config: Config, rule: Rule, ref: ImageReference, client: RegistryClient, keyring: KeyRing) -> ImageVerdict:
    """Resolve and verify one image with the rule's verifier. Raises nothing."""
    return verifier_for(rule).evaluate(config, rule, ref, client, keyring)


def verifier_endpoints(config: Config) -> set[Endpoint]:
    """Every host a rule's verifier may contact beyond the image registries."""
    found: set[Endpoint] = set()
    for rule in config.policy:
        found |= verifier_for(rule).endpoints(rule, config.registries.insecure)
    return found
