"""The verdict on one image: what a verifier returns and the decision, cache and logs read.

A primitive type with no signgate imports, so every verifier can return it without importing the
dispatcher in verify.py (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImageVerdict:
    passed: bool
    reason: str  # stable token for logs and metrics
    message: str  # for kubectl output; empty when passed with nothing to say
    digest: str | None = None
    verified_keys: tuple[str, ...] = ()
    details: tuple[str, ...] = field(default=())  # what was searched and found, for logs
    expires_at: float | None = None  # wall-clock expiry, when the verdict came from the cache
    log_detail: str | None = None  # the cause kept out of the message, for the decision log only
