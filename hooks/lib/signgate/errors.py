"""One error hierarchy for signgate.

Every message is written for the person who reads it in `kubectl` output: it says what went
wrong in plain words and never carries credentials or whole response bodies. `reason` is a
short, stable token for logs and metrics.
"""

from __future__ import annotations


class SigngateError(Exception):
    """Base class of every error signgate raises on purpose."""

    reason = "error"

    def __init__(self, message: str, log_detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        # What the log may say but the denial must not (see network.py: no port scanner in kubectl).
        self.log_detail = log_detail

    def __str__(self) -> str:
        return self.message


class ConfigError(SigngateError):
    """The configuration file is missing, unreadable or invalid. Names the file and the field."""

    reason = "invalid-config"


class InvalidReference(SigngateError):
    """An image reference does not follow the distribution reference grammar."""

    reason = "invalid-reference"


class AmbiguousRegistry(InvalidReference):
    """A registry host or port without one canonical reading (`127.1`, `[::ffff:7f00:1]`, `:0443`).

    Such a reference may still be pulled by the kubelet (C resolvers read `127.1` as 127.0.0.1),
    so it is denied in every mode: no `mode: warn` may admit an image whose registry is unclear.
    """


class InputError(SigngateError):
    """The binding context or the admission request is malformed."""

    reason = "invalid-input"


class KeyLoadError(SigngateError):
    """A public key cannot be read or is of an unsupported type."""

    reason = "invalid-key"


class DeadlineExceeded(SigngateError):
    """The internal deadline ran out before the work finished."""

    reason = "timeout"


class RegistryError(SigngateError):
    """Any failure talking to a registry."""

    reason = "registry-error"


class RegistryUnreachable(RegistryError):
    reason = "registry-unreachable"


class RegistryAuthError(RegistryError):
    reason = "registry-auth"


class RegistryRateLimited(RegistryError):
    reason = "registry-rate-limited"


class NotFound(RegistryError):
    reason = "not-found"


class DigestMismatch(RegistryError):
    """Fetched bytes do not hash to the digest they were requested or described by."""

    reason = "digest-mismatch"


class TooLarge(RegistryError):
    reason = "too-large"


class BadResponse(RegistryError):
    """The registry answered with something that is not what the protocol says."""

    reason = "bad-response"


class HostNotAllowed(RegistryError):
    """A request would go to a host that the policy does not allow to be contacted."""

    reason = "host-not-allowed"
