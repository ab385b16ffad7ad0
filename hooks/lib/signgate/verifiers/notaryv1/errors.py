"""The NotaryError family: one class per reason, so that an outcome is read from the error's type
(or its `reason`), never from its message."""

from __future__ import annotations

from typing import Literal

from ...errors import SigngateError

# The reasons a notaryv1 denial carries in logs and metrics (stable tokens).
NotaryReason = Literal[
    "notary-error",
    "notary-root-untrusted",
    "notary-expired",
    "notary-no-trust-data",
    "notary-digest-mismatch",
    "notary-delegation-missing",
    "notary-invalid-metadata",
    "notary-bad-signature",
    "notary-hash-mismatch",
    "notary-unreachable",
    "notary-auth",
    "notary-too-large",
]


class NotaryError(SigngateError):
    """A trust-data check failed. The message says which step and which file."""

    reason: NotaryReason = "notary-error"


class RootNotTrusted(NotaryError):
    reason: NotaryReason = "notary-root-untrusted"


class MetadataExpired(NotaryError):
    reason: NotaryReason = "notary-expired"


class NoTrustData(NotaryError):
    reason: NotaryReason = "notary-no-trust-data"


class TargetMismatch(NotaryError):
    reason: NotaryReason = "notary-digest-mismatch"


class DelegationMissing(NotaryError):
    reason: NotaryReason = "notary-delegation-missing"


class InvalidMetadata(NotaryError):
    reason: NotaryReason = "notary-invalid-metadata"


class ThresholdNotMet(NotaryError):
    reason: NotaryReason = "notary-bad-signature"


class HashMismatch(NotaryError):
    reason: NotaryReason = "notary-hash-mismatch"


class NotaryUnreachable(NotaryError):
    reason: NotaryReason = "notary-unreachable"


class NotaryAuthError(NotaryError):
    """The Notary server refused the credentials, or asked for ones that are not configured."""

    reason: NotaryReason = "notary-auth"


class NotaryTooLarge(NotaryError):
    """A trust-data file is larger than the cap it is fetched with."""

    reason: NotaryReason = "notary-too-large"
