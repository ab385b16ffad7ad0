"""The verdict on one image: what a verifier returns and the decision, cache and logs read.

A primitive type with no signgate imports, so every verifier can return it without importing the
decision code or another verifier (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

# Every reason token a verdict, a static decision or an error may carry: the stable words of
# logs and metrics (`reason=` on the decision line, the `reason` label). Outcomes are decided on
# these tokens and on exception types, never on a message's words; tests/unit/test_reasons.py
# checks that every token the code writes is listed here.
Reason = Literal[
    # passed
    "verified", "verified-index", "verified-platforms", "allowed-by-rule", "unmatched-allowed",
    # static decisions
    "untrusted-registry", "denied-by-rule", "digest-required", "latest-denied", "verify",
    # signatures
    "no-signature", "no-valid-signature", "threshold-not-met", "required-key-missing", "image-not-found",
    # input and configuration
    "invalid-config", "invalid-input", "invalid-key", "invalid-reference", "internal-error", "timeout", "error",
    # a warning at --config: a trusted root or CA bundle is past or near the end of its validity
    "trust-material-expiring",
    # registries
    "registry-error", "registry-unreachable", "registry-auth", "registry-rate-limited", "not-found",
    "digest-mismatch", "too-large", "bad-response", "host-not-allowed", "pull-secret-invalid",
    # Notary v1
    "notary-error", "notary-root-untrusted", "notary-expired", "notary-no-trust-data", "notary-digest-mismatch",
    "notary-delegation-missing", "notary-invalid-metadata", "notary-bad-signature", "notary-hash-mismatch",
    "notary-unreachable", "notary-auth", "notary-too-large",
    # a whole decision's summary, for the decisions metric (metrics.py)
    "static", "not-checked", "too-many-images",
]
REASONS: frozenset[str] = frozenset(get_args(Reason))


@dataclass(frozen=True)
class ImageVerdict:
    passed: bool
    reason: Reason  # stable token for logs and metrics
    message: str  # for kubectl output; empty when passed with nothing to say
    digest: str | None = None
    verified_keys: tuple[str, ...] = ()
    details: tuple[str, ...] = field(default=())  # what was searched and found, for logs
    expires_at: float | None = None  # wall-clock expiry, when the verdict came from the cache
    log_detail: str | None = None  # the cause kept out of the message, for the decision log only
