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
single-component docker.io name gets the "library/" prefix. The registry is then put in its
canonical form (`canonical_registry` below: lower case, no default port, one spelling per IP
address, `localhost` as 127.0.0.1), so that no policy rule, cache entry or credential can be
dodged by spelling the same registry another way. With no tag and no digest the tag is "latest". When both a tag and a digest are
given, the digest is what the kubelet pulls, so it is what gets verified.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import AbstractSet

from .errors import AmbiguousRegistry, InvalidReference

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_PATH_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = re.compile(
    # Any number of port digits: canonical_registry then says what is wrong with the port.
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?"
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

    registry: str  # canonical host[:port] (see canonical_registry), e.g. "docker.io", "127.0.0.1:5000"
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

    @property
    def written_name(self) -> str:
        """registry/repository written so that it parses back to this registry."""
        registry = self.registry
        if "." not in registry and ":" not in registry and registry != "localhost":
            # A dot-less host was recognised only by its capitals; lower-cased it would read back
            # as a Docker Hub namespace, so it is written in capitals to parse back to this host.
            registry = registry.upper()
        return f"{registry}/{self.repository}"

    def __str__(self) -> str:
        text = self.written_name
        if self.tag is not None and not (self.tag_defaulted and self.digest):
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def parse_reference(text: object, insecure: AbstractSet[str] = frozenset()) -> ImageReference:
    """Parse and normalise an image reference, or raise InvalidReference saying why.

    `insecure` is the configuration's canonical `registries.insecure`: it decides whether `:80`
    is a host's default port (see `canonical_registry`). Pass it wherever a configuration is at hand.
    """
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

    registry, repository = _split_name(remainder, shown, insecure)
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


def _split_name(name: str, shown: str, insecure: AbstractSet[str]) -> tuple[str, str]:
    if not name:
        raise InvalidReference(f"invalid image reference {shown!r}: no repository name")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if not _HOST.fullmatch(first):
            raise InvalidReference(f"invalid image reference {shown!r}: invalid registry host {_shorten(first)!r}")
        try:
            registry = canonical_registry(first, insecure)
        except AmbiguousRegistry as exc:
            raise AmbiguousRegistry(f"invalid image reference {shown!r}: {exc}") from None
        path = rest
    else:
        registry, path = DOCKER_HUB, name
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


# ---- the canonical registry identity ------------------------------------------------------------
#
# One registry can be written many ways: `registry.example.com`, `Registry.Example.COM.`,
# `registry.example.com:443`; `127.0.0.1:5000`, `localhost:5000`, `127.1:5000`, `2130706433:5000`,
# `[::ffff:7f00:1]:5000`. The kubelet pulls from the same server whichever is written, so policy
# matching, the verdict cache and credential lookup must all see one spelling, or a rule for one
# spelling is dodged by writing another. Every registry host signgate reads (image references,
# policy patterns, registries.insecure, signatureRepository, pull-secret keys, redirect and token
# URLs) goes through `canonical_registry` (or `canonical_endpoint` for URLs). Spellings that have
# no single reading are refused rather than guessed at.

_HOST_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_PORT = re.compile(r"[1-9][0-9]{0,4}")
_IPV4_PART = re.compile(r"0|[1-9][0-9]{0,2}")
_HEX_NUMBER = re.compile(r"0x[0-9a-f]*")
LOOPBACK_IPV4 = "127.0.0.1"
DEFAULT_PORTS = {"https": 443, "http": 80}


def split_host_port(text: str) -> tuple[str, str | None]:
    """`host:5000` -> ("host", "5000"); `[::1]:5000` -> ("[::1]", "5000"); `host` -> ("host", None)."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AmbiguousRegistry(f"{_shorten(text)!r}: an IPv6 address must be closed with ']'")
        host, rest = text[: end + 1], text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise AmbiguousRegistry(f"{_shorten(text)!r}: unexpected characters after the IPv6 address")
        return host, (rest[1:] if rest else None)
    host, sep, port = text.partition(":")
    return host, (port if sep else None)


def canonical_host(text: str) -> str:
    """A registry host (no port) in canonical form, or AmbiguousRegistry saying why there is none.

    - names: lower case, without a trailing dot; `localhost` and `*.localhost` are loopback by
      definition (RFC 6761) and become 127.0.0.1, the address signgate then connects to;
    - IPv4: only four decimal parts without leading zeros. C resolvers also read `127.1`,
      `2130706433`, `0x7f000001` and `0177.0.0.1` as 127.0.0.1, other parsers do not, so such a
      host has no single meaning and is refused (a last label that is a number marks an IPv4
      attempt: no top-level domain is numeric);
    - IPv6: in brackets, compressed, lower case; spellings that embed an IPv4 address
      (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`) are
      refused: they reach an IPv4 host under another name.
    """
    if not text:
        raise AmbiguousRegistry("the registry host is empty")
    if not text.isascii():
        raise AmbiguousRegistry(f"registry host {_shorten(text)!r} is not ASCII")
    if text.startswith("["):
        return _canonical_ipv6(text)
    name = text.lower()
    if name.endswith("."):
        name = name[:-1]  # the DNS root: `example.com.` is `example.com`
    labels = name.split(".")
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise AmbiguousRegistry(f"invalid registry host {_shorten(text)!r}")
    last = labels[-1]
    if last.isdigit() or _HEX_NUMBER.fullmatch(last):
        if len(labels) != 4 or not all(_IPV4_PART.fullmatch(p) and int(p) <= 255 for p in labels):
            raise AmbiguousRegistry(
                f"registry host {_shorten(text)!r} is not an IPv4 address in dotted-decimal form "
                "(four numbers from 0 to 255 without leading zeros, e.g. 10.0.0.1); "
                "short, decimal, hexadecimal and octal forms are refused"
            )
        return name
    if name == "localhost" or name.endswith(".localhost"):
        return LOOPBACK_IPV4
    return name


def _canonical_ipv6(text: str) -> str:
    inner = text[1:-1] if text.endswith("]") else text[1:]
    # Dots are let through only so that `[::ffff:1.2.3.4]` is refused below with the clearer reason.
    if not text.endswith("]") or not inner or not re.fullmatch(r"[0-9a-fA-F:.]+", inner):
        raise AmbiguousRegistry(f"invalid IPv6 registry host {_shorten(text)!r} (hex digits and ':' in brackets only)")
    try:
        address = ipaddress.IPv6Address(inner)
    except ValueError:
        raise AmbiguousRegistry(f"invalid IPv6 registry host {_shorten(text)!r}") from None
    embedded = embedded_ipv4(address)
    if embedded is not None:
        raise AmbiguousRegistry(
            f"registry host {_shorten(text)!r} is an IPv6 spelling of the IPv4 address {embedded}; "
            "write the IPv4 address"
        )
    if "." in inner:
        raise AmbiguousRegistry(f"invalid IPv6 registry host {_shorten(text)!r} (hex digits and ':' in brackets only)")
    return f"[{address.compressed}]"


# The top 96 bits of the IPv6 prefixes whose last 32 bits are an IPv4 address.
_IPV4_IN_IPV6_PREFIXES = frozenset({
    0x0000_0000_0000_0000_0000_FFFF,  # IPv4-mapped ::ffff:0:0/96
    0x0000_0000_0000_0000_FFFF_0000,  # IPv4-translated ::ffff:0:0:0/96
    0x0064_FF9B_0000_0000_0000_0000,  # NAT64 64:ff9b::/96
})  # and IPv4-compatible ::/96 (prefix 0), except :: and ::1


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (mapped, compatible, translated, NAT64), or None."""
    value = int(address)
    prefix = value >> 32
    if prefix in _IPV4_IN_IPV6_PREFIXES or (prefix == 0 and value > 1):  # ::a.b.c.d, but not :: or ::1
        return ipaddress.IPv4Address(value & 0xFFFFFFFF)
    return None


def _host_and_port(text: str) -> tuple[str, int | None]:
    host_text, port_text = split_host_port(text)
    host = canonical_host(host_text)
    if port_text is None:
        return host, None
    if not _PORT.fullmatch(port_text) or int(port_text) > 65535:
        raise AmbiguousRegistry(
            f"registry {_shorten(text)!r} has an invalid port {_shorten(port_text)!r} "
            "(a number from 1 to 65535 without leading zeros)"
        )
    return host, int(port_text)


def canonical_registry(text: str, insecure: AbstractSet[str] = frozenset()) -> str:
    """The canonical identity `host[:port]` of a registry as an image reference names it.

    The port is left out when it is the default of the scheme signgate uses for the host: 443
    (HTTPS), or 80 for a host that `insecure` (canonical `registries.insecure`) lists without a
    port (plain HTTP). Docker Hub's aliases become `docker.io`. `insecure` must itself be
    canonical (see `canonical_insecure`).
    """
    host, port = _host_and_port(text)
    if port is not None and f"{host}:{port}" not in insecure:
        if port == 443 and host in insecure:
            # `host` is plain HTTP on port 80; `host:443` is another server, and dropping the
            # port would send the request to port 80 instead.
            raise AmbiguousRegistry(
                f"registry {_shorten(text)!r}: port 443 of {host}, which registries.insecure lists as "
                f"plain HTTP on port 80; list {host}:443 there to use plain HTTP on port 443"
            )
        if port == 443 or (port == 80 and host in insecure):
            port = None
    identity = host if port is None else f"{host}:{port}"
    return DOCKER_HUB if identity in _DOCKER_HUB_ALIASES else identity


def canonical_insecure(text: str) -> str:
    """A `registries.insecure` entry in canonical form: plain HTTP, so `:80` is the default port."""
    host, port = _host_and_port(text)
    return host if port in (None, 80) else f"{host}:{port}"


def canonical_endpoint(netloc: str, scheme: str) -> tuple[str, int]:
    """(canonical host, port) that a URL's `host[:port]` connects to under `scheme`."""
    host, port = _host_and_port(netloc)
    return host, DEFAULT_PORTS[scheme] if port is None else port


def endpoint_netloc(host: str, port: int, scheme: str) -> str:
    """`host[:port]` for a URL, leaving out the scheme's default port."""
    return host if port == DEFAULT_PORTS[scheme] else f"{host}:{port}"


def _shorten(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def registry_endpoint(registry: str, insecure: AbstractSet[str]) -> tuple[str, int]:
    """The (host, port) a canonical registry name is contacted at."""
    host = DOCKER_HUB_API_HOST if registry == DOCKER_HUB else registry
    return canonical_endpoint(host, "http" if host in insecure else "https")
