"""Image references: parsing and normalisation by the distribution reference grammar.

Pure code, no I/O. The grammar follows distribution/reference (written from its specification):

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [domain "/"] path-component ("/" path-component)*
    domain     := host [":" port]
    host       := domain-component ("." domain-component)* | "[" ipv6 "]"
    path-comp. := [a-z0-9]+ (separator [a-z0-9]+)*      separator := [._] | "__" | "-"+
    tag        := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest     := algorithm ":" hex

Normalisation, as Docker does it: a first component is a registry only if it contains "." or ":"
or is "localhost" (or has upper-case letters); otherwise the registry is docker.io, and a
single-component docker.io name gets the "library/" prefix. The registry host is lower-cased
here (host names are case-insensitive) so that policy globs cannot be dodged by spelling a host
in capitals. With no tag and no digest the tag is "latest". When both a tag and a digest are
given, the digest is what the kubelet pulls, so it is what gets verified.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]{{1,5}})?"
)
_TAG = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST = re.compile(r"(?P<alg>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*):(?P<hex>[0-9a-fA-F]{32,})")
# Digest algorithms signgate can check fetched bytes against. Others are valid grammar but
# cannot be verified, so they are refused with a clear message instead of being trusted.
SUPPORTED_DIGESTS = {"sha256": 64, "sha512": 128}
MAX_NAME_LENGTH = 255
MAX_REFERENCE_LENGTH = 4096


@dataclass(frozen=True)
class ImageReference:
    """A parsed, normalised image reference."""

    registry: str  # normalised host[:port], e.g. "docker.io", "127.0.0.1:5000"
    repository: str  # path within the registry, e.g. "library/nginx"
    tag: str | None  # None only when the reference gives a digest and no tag
    digest: str | None  # "sha256:<hex>" when pinned
    original: str
    tag_defaulted: bool = False  # True when neither tag nor digest was written

    @property
    def name(self) -> str:
        """registry/repository: what policy globs match."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host the registry API is served from."""
        return DOCKER_HUB_API_HOST if self.registry == DOCKER_HUB else self.registry

    @property
    def is_latest(self) -> bool:
        """The reference names the mutable `latest` tag (written or implied) and no digest."""
        return self.digest is None and self.tag == "latest"

    def with_digest(self, digest: str) -> "ImageReference":
        # Keep tag_defaulted: an implied "latest" must not turn into a written one in str().
        return ImageReference(self.registry, self.repository, self.tag, digest, self.original, self.tag_defaulted)

    def __str__(self) -> str:
        registry = self.registry
        if "." not in registry and ":" not in registry and registry != "localhost":
            # A dot-less host was recognised only by its capitals; lower-cased it would read back
            # as a Docker Hub namespace, so it is written in capitals to parse back to this host.
            registry = registry.upper()
        text = f"{registry}/{self.repository}"
        if self.tag is not None and not (self.tag_defaulted and self.digest):
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_reference(text: object) -> ImageReference:
    """Parse and normalise an image reference, or raise InvalidReference saying why."""
    if not isinstance(text, str):
        raise InvalidReference(f"image must be a string, got {type(text).__name__}")
    if not text:
        raise InvalidReference("image reference is empty")
    if len(text) > MAX_REFERENCE_LENGTH:
        raise InvalidReference(f"image reference is longer than {MAX_REFERENCE_LENGTH} characters")
    shown = _shorten(text)
    if text != text.strip() or any(ch.isspace() for ch in text):
        raise InvalidReference(f"invalid image reference {shown!r}: it contains white space")

    remainder, digest = text, None
    if "@" in remainder:
        remainder, digest_text = remainder.split("@", 1)
        digest = _parse_digest(digest_text, shown)

    tag = None
    # A ":" after the last "/" separates the tag; a ":" before it belongs to a registry port.
    last_slash = remainder.rfind("/")
    colon = remainder.rfind(":")
    if colon > last_slash:
        remainder, tag = remainder[:colon], remainder[colon + 1 :]
        if not _TAG.fullmatch(tag):
            raise InvalidReference(f"invalid image reference {shown!r}: invalid tag {_shorten(tag)!r}")

    registry, repository = _split_name(remainder, shown)
    if len(f"{registry}/{repository}") > MAX_NAME_LENGTH:
        raise InvalidReference(f"invalid image reference {shown!r}: name longer than {MAX_NAME_LENGTH} characters")

    tag_defaulted = tag is None and digest is None
    if tag_defaulted:
        tag = "latest"
    return ImageReference(registry, repository, tag, digest, text, tag_defaulted)


def _parse_digest(text: str, shown: str) -> str:
    match = _DIGEST.fullmatch(text)
    if not match:
        raise InvalidReference(f"invalid image reference {shown!r}: invalid digest {_shorten(text)!r}")
    algorithm, hex_part = match.group("alg"), match.group("hex")
    expected = SUPPORTED_DIGESTS.get(algorithm)
    if expected is None:
        raise InvalidReference(
            f"invalid image reference {shown!r}: digest algorithm {algorithm!r} is not supported (use sha256)"
        )
    if len(hex_part) != expected or hex_part != hex_part.lower():
        raise InvalidReference(
            f"invalid image reference {shown!r}: a {algorithm} digest has {expected} lower-case hex digits"
        )
    return f"{algorithm}:{hex_part}"


def _split_name(name: str, shown: str) -> tuple[str, str]:
    if not name:
        raise InvalidReference(f"invalid image reference {shown!r}: no repository name")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if not _HOST.fullmatch(first):
            raise InvalidReference(f"invalid image reference {shown!r}: invalid registry host {_shorten(first)!r}")
        registry, path = first.lower(), rest
    else:
        registry, path = DOCKER_HUB, name
    if registry in _DOCKER_HUB_ALIASES:
        registry = DOCKER_HUB
    components = path.split("/")
    for component in components:
        if not _PATH_COMPONENT.fullmatch(component):
            raise InvalidReference(
                f"invalid image reference {shown!r}: invalid repository path component {_shorten(component)!r}"
                " (lower-case letters, digits and separators only)"
            )
    if registry == DOCKER_HUB and len(components) == 1:
        path = f"library/{path}"
    return registry, path


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
