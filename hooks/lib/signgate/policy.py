"""Which rule applies to an image, and what the rule decides without any network I/O.

Pure code. Patterns are globs over the normalised image name `registry/repository`
(tag and digest are not part of it):

- `*` matches any characters within one path segment (never `/`);
- `**` matches any characters across segments (including `/`);
- everything else is literal, and a pattern always matches the whole name (it is anchored at
  both ends: `docker.io/library/nginx` never matches `docker.io/library/nginx-evil`).

Names are matched in their canonical form (reference.canonical_registry), and so is a
pattern's registry when it is literal: `registry.example.com:443/**` is read as
`registry.example.com/**` and `localhost:5000/**` as `127.0.0.1:5000/**` (canonical_pattern).

When several rules match, the most specific one wins. The order, compared left to right:

1. more literal segments (segments with no `*`);
2. a longer literal prefix (characters before the first `*`);
3. fewer `**`;
4. fewer `*` characters;
5. the rule that comes first in the file.

The last step makes the order total, so the outcome never depends on anything but the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import AbstractSet

from .settings import Config, Rule
from .errors import InvalidReference
from .reference import ImageReference, canonical_registry

_ALLOWED_PATTERN = re.compile(r"[A-Za-z0-9._\-:/*\[\]]+")


def check_pattern(pattern: str) -> str | None:
    """Return a problem description, or None when the pattern is usable."""
    if not pattern:
        return "must not be empty"
    if "@" in pattern:
        return f"{pattern!r}: patterns match registry/repository; leave out tags and digests"
    if not _ALLOWED_PATTERN.fullmatch(pattern):
        return f"{pattern!r} may only hold registry and repository characters, '/' and '*'"
    if "***" in pattern:
        return f"{pattern!r}: use '*' or '**', not '***'"
    if ":" in pattern.split("/", 1)[-1] and pattern != "**":
        return f"{pattern!r}: patterns match registry/repository; leave out tags and digests"
    if pattern.startswith("/") or pattern.endswith("/") or "//" in pattern:
        return f"{pattern!r} has an empty path segment"
    if pattern != pattern.lower():
        # Names are matched after normalisation, which lower-cases the host (and a repository
        # path has no capitals), so such a pattern could never match: a rule that silently
        # never applies, or a deny rule that denies nothing.
        return f"{pattern!r} must be lower-case: image names are compared in lower case"
    if pattern != "**" and "/" not in pattern:
        return (
            f"{pattern!r} has no '/': patterns match registry/repository, "
            "e.g. 'registry.example.com/team/*' or 'docker.io/library/nginx'"
        )
    return None


def canonical_pattern(pattern: str, insecure: AbstractSet[str]) -> str:
    """The pattern with its registry in canonical form, or InvalidReference saying why it has none.

    Call after check_pattern. A literal registry is canonicalised as image names are, so that
    the rule matches however the pod spells the registry. A registry with a wildcard cannot be
    canonicalised as a whole; its literal port must then be canonical itself, and it must not
    target `localhost` names, which image names never keep (they become 127.0.0.1).
    """
    first, sep, rest = pattern.partition("/")
    if not sep or not ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        return pattern  # `**`, `**/app` or a Docker Hub path: no registry written
    if "*" not in first:
        return f"{canonical_registry(first, insecure)}/{rest}"
    host, _, port = first.rpartition(":")
    if not host or "*" in port or "]" in port:
        host, port = first, ""  # no literal port (or the colon belongs to an IPv6 address)
    if port and (not re.fullmatch(r"[1-9][0-9]{0,4}", port) or int(port) > 65535):
        raise InvalidReference(f"registry {first!r} has an invalid port {port!r} (1 to 65535, no leading zeros)")
    if port == "443":
        raise InvalidReference(f"registry {first!r}: leave out :443, the default port (image names are compared without it)")
    if host.endswith(".") or host.endswith(".localhost") or host.rstrip("*") == "localhost":
        raise InvalidReference(
            f"registry {first!r} can never match: image names are compared without a trailing dot, "
            "and with localhost names as 127.0.0.1"
        )
    return pattern


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    parts = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            parts.append(".*")
            i += 2
        elif pattern[i] == "*":
            parts.append("[^/]*")
            i += 1
        else:
            parts.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(parts))


def matches(pattern: str, name: str) -> bool:
    return _compile(pattern).fullmatch(name) is not None


def specificity(rule: Rule) -> tuple[int, int, int, int, int]:
    """A sort key: larger is more specific (see the module docstring)."""
    pattern = rule.images
    literal_segments = sum(1 for segment in pattern.split("/") if "*" not in segment)
    star = pattern.find("*")
    literal_prefix = len(pattern) if star < 0 else star
    return (literal_segments, literal_prefix, -pattern.count("**"), -pattern.count("*"), -rule.index)


def ordered_rules(config: Config) -> list[Rule]:
    """Rules in the order they are tried: most specific first."""
    return sorted(config.policy, key=specificity, reverse=True)


def match_rule(config: Config, ref: ImageReference) -> Rule | None:
    best: Rule | None = None
    for rule in config.policy:
        if matches(rule.images, ref.name) and (best is None or specificity(rule) > specificity(best)):
            best = rule
    return best


@dataclass(frozen=True)
class StaticDecision:
    """What the rule decides before any network work. `passed is None` means: verify signatures."""

    passed: bool | None
    reason: str  # a stable token for logs and metrics
    message: str  # for the person reading kubectl output


def static_decision(config: Config, ref: ImageReference, rule: Rule | None) -> StaticDecision:
    if rule is None and config.unmatched_images != "allow":
        return StaticDecision(
            False,
            "untrusted-registry",
            f"registry or repository {ref.name} is not trusted: no policy rule matches it",
        )
    if rule is not None and rule.action == "deny":
        # Before the tag rules: telling the user to pin a digest would not get the image admitted.
        text = rule.message or f"denied by {rule.label}"
        return StaticDecision(False, "denied-by-rule", text)
    # The tag rules apply to every admitted image, including unmatched ones that are allowed.
    where = rule.label if rule is not None else "global tag rules"
    if config.rule_require_digest(rule) and ref.digest is None:
        return StaticDecision(
            False,
            "digest-required",
            f"the image must be pinned by digest (name@sha256:...), not by tag {ref.tag!r} ({where} require a digest)",
        )
    if config.rule_deny_latest(rule) and ref.is_latest:
        written = "has no tag, which means :latest" if ref.tag_defaulted else "uses the tag :latest"
        return StaticDecision(
            False, "latest-denied", f"the image {written}; use a fixed version tag or a digest ({where})"
        )
    if rule is None:
        return StaticDecision(True, "unmatched-allowed", "no policy rule matches; unmatched images are allowed")
    if rule.action == "allow":
        return StaticDecision(True, "allowed-by-rule", f"allowed without signature by {rule.label}")
    return StaticDecision(None, "verify", "signature verification required")
