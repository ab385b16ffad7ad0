"""Specification of image reference parsing and normalisation (signgate.reference).

An image reference is what a pod spec's `image:` field holds. signgate must read it exactly as the
kubelet does, because policy globs match the normalised name and the digest is what gets verified.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from signgate.errors import InvalidReference
from signgate.reference import ImageReference, embedded_ipv4, parse_reference

SHA256 = "sha256:" + "0123456789abcdef" * 4
SHA512 = "sha512:" + "0123456789abcdef" * 8


# (reference as written, registry, repository, tag, digest, tag_defaulted)
VALID = [
    pytest.param("nginx", "docker.io", "library/nginx", "latest", None, True,
                 id="single-name-gets-docker-hub-library-prefix-and-default-tag"),
    pytest.param("nginx:1.25", "docker.io", "library/nginx", "1.25", None, False,
                 id="single-name-with-tag-keeps-tag"),
    pytest.param("bitnami/redis:7.2", "docker.io", "bitnami/redis", "7.2", None, False,
                 id="two-component-name-is-docker-hub-without-library-prefix"),
    pytest.param("docker.io/nginx", "docker.io", "library/nginx", "latest", None, True,
                 id="explicit-docker-io-single-name-gets-library-prefix"),
    pytest.param("docker.io/library/nginx:1.25", "docker.io", "library/nginx", "1.25", None, False,
                 id="fully-qualified-docker-hub-name-is-unchanged"),
    pytest.param("index.docker.io/library/nginx", "docker.io", "library/nginx", "latest", None, True,
                 id="index-docker-io-is-an-alias-of-docker-io"),
    pytest.param("index.docker.io/nginx", "docker.io", "library/nginx", "latest", None, True,
                 id="index-docker-io-single-name-gets-library-prefix"),
    pytest.param("registry.example.com:5000/team/app:v1", "registry.example.com:5000", "team/app", "v1", None, False,
                 id="registry-host-with-port"),
    pytest.param("registry.example.com/app", "registry.example.com", "app", "latest", None, True,
                 id="single-name-on-another-registry-gets-no-library-prefix"),
    pytest.param("ghcr.io/org/team/sub/app:2", "ghcr.io", "org/team/sub/app", "2", None, False,
                 id="many-path-components"),
    pytest.param("localhost/app", "127.0.0.1", "app", "latest", None, True,
                 id="localhost-without-dot-or-port-is-a-registry-and-is-127.0.0.1"),
    pytest.param("localhost:5000/app:dev", "127.0.0.1:5000", "app", "dev", None, False,
                 id="localhost-with-port-is-127.0.0.1-with-port"),
    pytest.param("LocalHost:5000/app", "127.0.0.1:5000", "app", "latest", None, True,
                 id="localhost-in-capitals-is-127.0.0.1"),
    pytest.param("registry.localhost:5000/app", "127.0.0.1:5000", "app", "latest", None, True,
                 id="a-localhost-subdomain-is-loopback-too"),
    pytest.param("registry.example.com:443/app", "registry.example.com", "app", "latest", None, True,
                 id="default-https-port-is-dropped"),
    pytest.param("Registry.Example.COM:443/app", "registry.example.com", "app", "latest", None, True,
                 id="capitals-and-default-port-together"),
    pytest.param("registry.example.com:80/app", "registry.example.com:80", "app", "latest", None, True,
                 id="port-80-of-an-https-registry-is-another-port"),
    pytest.param("docker.io:443/nginx", "docker.io", "library/nginx", "latest", None, True,
                 id="docker-hub-with-default-port-is-docker-hub"),
    pytest.param("index.docker.io:443/nginx", "docker.io", "library/nginx", "latest", None, True,
                 id="docker-hub-alias-with-default-port-is-docker-hub"),
    pytest.param("10.0.0.1:5000/app", "10.0.0.1:5000", "app", "latest", None, True,
                 id="dotted-decimal-ipv4-is-canonical"),
    pytest.param("[0:0:0:0:0:0:0:1]:5000/app", "[::1]:5000", "app", "latest", None, True,
                 id="ipv6-is-compressed"),
    pytest.param("[::1]:5000/app:v1", "[::1]:5000", "app", "v1", None, False,
                 id="ipv6-host-with-port"),
    pytest.param("[FE80::1]/app", "[fe80::1]", "app", "latest", None, True,
                 id="ipv6-host-is-lower-cased"),
    pytest.param("Registry.Example.COM/team/app", "registry.example.com", "team/app", "latest", None, True,
                 id="upper-case-host-is-lower-cased"),
    pytest.param("MyRegistry/app", "myregistry", "app", "latest", None, True,
                 id="dotless-first-component-with-capitals-is-a-registry-host"),
    pytest.param("myregistry/app", "docker.io", "myregistry/app", "latest", None, True,
                 id="dotless-lower-case-first-component-is-a-docker-hub-namespace"),
    pytest.param("localhost:5000", "docker.io", "library/localhost", "5000", None, False,
                 id="host-and-port-without-path-is-a-name-and-tag-as-docker-reads-it"),
    pytest.param("a/b_c__d-e--f.g:x", "docker.io", "a/b_c__d-e--f.g", "x", None, False,
                 id="path-component-separators-dot-underscore-double-underscore-dashes"),
    pytest.param("nginx:_Under.Score-1", "docker.io", "library/nginx", "_Under.Score-1", None, False,
                 id="tag-may-start-with-underscore-and-hold-capitals-dots-dashes"),
    pytest.param("nginx:" + "t" * 128, "docker.io", "library/nginx", "t" * 128, None, False,
                 id="tag-of-128-characters-is-the-longest-allowed"),
    pytest.param("nginx:latest", "docker.io", "library/nginx", "latest", None, False,
                 id="explicit-latest-is-not-tag-defaulted"),
    pytest.param(f"nginx@{SHA256}", "docker.io", "library/nginx", None, SHA256, False,
                 id="digest-only-has-no-tag-and-no-default-tag"),
    pytest.param(f"nginx:1.25@{SHA256}", "docker.io", "library/nginx", "1.25", SHA256, False,
                 id="tag-and-digest-both-kept-digest-wins"),
    pytest.param(f"registry.example.com:5000/app:v1@{SHA256}", "registry.example.com:5000", "app", "v1", SHA256,
                 False, id="port-tag-and-digest"),
    pytest.param(f"nginx@{SHA512}", "docker.io", "library/nginx", None, SHA512, False,
                 id="sha512-digest-is-accepted"),
]


@pytest.mark.parametrize("text, registry, repository, tag, digest, tag_defaulted", VALID)
def test_parse_reference_normalises(text, registry, repository, tag, digest, tag_defaulted):
    ref = parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest, ref.tag_defaulted) == (
        registry,
        repository,
        tag,
        digest,
        tag_defaulted,
    )
    assert ref.original == text
    assert ref.name == f"{registry}/{repository}"


@pytest.mark.parametrize(
    "text, expected",
    [
        pytest.param("nginx", "docker.io/library/nginx:latest", id="implied-latest-is-written-out"),
        pytest.param(f"nginx@{SHA256}", f"docker.io/library/nginx@{SHA256}", id="digest-only-has-no-tag"),
        pytest.param(f"nginx:1.25@{SHA256}", f"docker.io/library/nginx:1.25@{SHA256}", id="tag-and-digest-both-shown"),
        pytest.param("Registry.Example.COM:5000/a/b:v1", "registry.example.com:5000/a/b:v1", id="host-lower-cased"),
        pytest.param("MyRegistry/app", "MYREGISTRY/app:latest",
                     id="dotless-host-is-written-in-capitals-so-it-stays-a-host"),
    ],
)
def test_str_is_the_normalised_reference(text, expected):
    assert str(parse_reference(text)) == expected


@pytest.mark.parametrize(
    "text, api_host",
    [
        pytest.param("nginx", "registry-1.docker.io", id="docker-hub-api-is-registry-1"),
        pytest.param("index.docker.io/library/nginx", "registry-1.docker.io", id="docker-hub-alias-api-is-registry-1"),
        pytest.param("registry.example.com:5000/app", "registry.example.com:5000", id="other-registry-is-its-own-api"),
    ],
)
def test_api_host(text, api_host):
    assert parse_reference(text).api_host == api_host


@pytest.mark.parametrize(
    "text, is_latest",
    [
        pytest.param("nginx", True, id="no-tag-means-latest"),
        pytest.param("nginx:latest", True, id="explicit-latest"),
        pytest.param("nginx:1.25", False, id="fixed-tag-is-not-latest"),
        pytest.param(f"nginx:latest@{SHA256}", False, id="latest-pinned-by-digest-is-not-mutable"),
        pytest.param(f"nginx@{SHA256}", False, id="digest-only-is-not-latest"),
    ],
)
def test_is_latest(text, is_latest):
    assert parse_reference(text).is_latest is is_latest


def test_with_digest_keeps_an_implied_tag_implied():
    pinned = parse_reference("nginx").with_digest(SHA256)
    assert pinned.digest == SHA256
    assert pinned.tag_defaulted is True
    assert str(pinned) == f"docker.io/library/nginx@{SHA256}"


def test_with_digest_keeps_a_written_tag():
    pinned = parse_reference("nginx:1.25").with_digest(SHA256)
    assert str(pinned) == f"docker.io/library/nginx:1.25@{SHA256}"


# (value, substrings the message must contain)
INVALID = [
    pytest.param("", ["image reference is empty"], id="empty"),
    pytest.param(" nginx", ["white space"], id="leading-space"),
    pytest.param("nginx ", ["white space"], id="trailing-space"),
    pytest.param("nginx latest", ["white space"], id="inner-space"),
    pytest.param("nginx\n", ["white space"], id="trailing-newline"),
    pytest.param("docker.io/Library/nginx", ["invalid repository path component 'Library'", "lower-case"],
                 id="upper-case-repository-path"),
    pytest.param("NGINX", ["invalid repository path component 'NGINX'"], id="upper-case-single-name"),
    pytest.param("a//b", ["invalid repository path component ''"], id="empty-path-component"),
    pytest.param("nginx/", ["invalid repository path component ''"], id="trailing-slash"),
    pytest.param("a/-b", ["invalid repository path component '-b'"], id="path-component-starting-with-separator"),
    pytest.param("a/b..c", ["invalid repository path component 'b..c'"], id="double-dot-separator"),
    pytest.param("a/b___c", ["invalid repository path component 'b___c'"], id="triple-underscore-separator"),
    pytest.param("localhost:5000:v1", ["invalid repository path component 'localhost:5000'"],
                 id="host-port-and-tag-without-path"),
    pytest.param("nginx:", ["invalid tag ''"], id="empty-tag"),
    pytest.param("nginx:-dash", ["invalid tag '-dash'"], id="tag-starting-with-dash"),
    pytest.param("nginx:.dot", ["invalid tag '.dot'"], id="tag-starting-with-dot"),
    pytest.param("nginx:a+b", ["invalid tag 'a+b'"], id="tag-with-plus"),
    pytest.param("nginx:" + "t" * 129, ["invalid tag"], id="tag-of-129-characters"),
    pytest.param("nginx@sha256:abc", ["invalid digest 'sha256:abc'"], id="short-digest"),
    pytest.param("nginx@sha256:" + "a" * 40, ["a sha256 digest has 64 lower-case hex digits"],
                 id="sha256-digest-with-40-hex-digits"),
    pytest.param("nginx@sha256:" + "a" * 65, ["a sha256 digest has 64 lower-case hex digits"],
                 id="sha256-digest-with-65-hex-digits"),
    pytest.param("nginx@sha256:" + "A" * 64, ["a sha256 digest has 64 lower-case hex digits"],
                 id="upper-case-hex-digest"),
    pytest.param("nginx@sha512:" + "a" * 64, ["a sha512 digest has 128 lower-case hex digits"],
                 id="sha512-digest-with-64-hex-digits"),
    pytest.param("nginx@md5:" + "a" * 32, ["digest algorithm 'md5' is not supported", "sha256"],
                 id="unsupported-digest-algorithm"),
    pytest.param("nginx@sha384:" + "a" * 96, ["digest algorithm 'sha384' is not supported"],
                 id="sha384-digest-is-not-supported"),
    pytest.param("nginx@", ["invalid digest ''"], id="empty-digest"),
    pytest.param("nginx@sha256" + "a" * 64, ["invalid digest"], id="digest-without-colon"),
    pytest.param(f"@{SHA256}", ["no repository name"], id="digest-without-name"),
    pytest.param(":v1", ["no repository name"], id="tag-without-name"),
    pytest.param("-bad.example.com/app", ["invalid registry host '-bad.example.com'"], id="host-starting-with-dash"),
    pytest.param("registry.example.com:http/app", ["invalid registry host 'registry.example.com:http'"],
                 id="non-numeric-port"),
    pytest.param("[::1/app", ["invalid registry host '[::1'"], id="unclosed-ipv6-bracket"),
    pytest.param("127.1:5000/app", ["registry host '127.1' is not an IPv4 address in dotted-decimal form"],
                 id="short-ipv4-form"),
    pytest.param("2130706433:5000/app", ["registry host '2130706433' is not an IPv4 address"], id="decimal-ipv4-form"),
    pytest.param("0x7f000001:5000/app", ["registry host '0x7f000001' is not an IPv4 address"], id="hex-ipv4-form"),
    pytest.param("0177.0.0.1:5000/app", ["registry host '0177.0.0.1' is not an IPv4 address"], id="octal-ipv4-form"),
    pytest.param("127.0.0.01:5000/app", ["registry host '127.0.0.01' is not an IPv4 address"],
                 id="ipv4-part-with-a-leading-zero"),
    pytest.param("1.2.3.256/app", ["registry host '1.2.3.256' is not an IPv4 address"], id="ipv4-part-over-255"),
    pytest.param("1.2.3.4.5/app", ["registry host '1.2.3.4.5' is not an IPv4 address"], id="five-numeric-parts"),
    pytest.param("[::ffff:7f00:1]:5000/app", ["IPv6 spelling of the IPv4 address 127.0.0.1"], id="ipv4-mapped-ipv6"),
    pytest.param("[::7f00:2]/app", ["IPv6 spelling of the IPv4 address 127.0.0.2"], id="ipv4-compatible-ipv6"),
    pytest.param("[64:ff9b::a9fe:a9fe]/app", ["IPv6 spelling of the IPv4 address 169.254.169.254"], id="nat64-ipv6"),
    pytest.param("[1:2]/app", ["invalid IPv6 registry host '[1:2]'"], id="ipv6-with-too-few-groups"),
    pytest.param("registry.example.com:0443/app", ["invalid port '0443'", "without leading zeros"],
                 id="port-with-a-leading-zero"),
    pytest.param("registry.example.com:000443/app", ["invalid port '000443'"], id="port-with-leading-zeros"),
    pytest.param("registry.example.com:0/app", ["invalid port '0'"], id="port-zero"),
    pytest.param("registry.example.com:65536/app", ["invalid port '65536'"], id="port-over-65535"),
    pytest.param("registry.example.com/" + "a" * 250, ["name longer than 255 characters"],
                 id="name-longer-than-255"),
    pytest.param("a" * 4097, ["longer than 4096 characters"], id="reference-longer-than-4096"),
    pytest.param(42, ["image must be a string, got int"], id="integer-is-not-a-reference"),
    pytest.param(None, ["image must be a string, got NoneType"], id="null-is-not-a-reference"),
    pytest.param(["nginx"], ["image must be a string, got list"], id="list-is-not-a-reference"),
    pytest.param(b"nginx", ["image must be a string, got bytes"], id="bytes-are-not-a-reference"),
]


@pytest.mark.parametrize("value, expected", INVALID)
def test_invalid_reference_is_refused_with_a_clear_message(value, expected):
    with pytest.raises(InvalidReference) as info:
        parse_reference(value)
    message = str(info.value)
    for part in expected:
        assert part in message
    assert info.value.reason == "invalid-reference"
    if isinstance(value, str) and value and len(value) <= 200 and not expected[0].startswith("image reference"):
        # Grammar errors quote the whole reference so the reader can find it in the pod spec.
        assert f"invalid image reference {value!r}" in message


def test_message_for_a_huge_reference_stays_short():
    text = "registry.example.com/" + "a" * 3000 + " x"
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    assert "white space" in str(info.value)
    assert len(str(info.value)) < 400


# --- properties -------------------------------------------------------------------------------

REFERENCE_ALPHABET = "abcxyzABCXYZ0189._-/:@[]+ \t\n\u00e9\u0130"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=80), st.text(alphabet=REFERENCE_ALPHABET, max_size=80)))
def test_parse_reference_raises_only_invalid_reference_on_any_text(text):
    try:
        ref = parse_reference(text)
    except InvalidReference as exc:
        assert str(exc)
    else:
        assert isinstance(ref, ImageReference)
        assert ref.registry == ref.registry.lower()


@given(st.one_of(st.integers(), st.none(), st.binary(), st.floats(), st.lists(st.text()), st.dictionaries(st.text(), st.text())))
def test_parse_reference_refuses_non_strings_with_invalid_reference(value):
    with pytest.raises(InvalidReference):
        parse_reference(value)


_domain_component = st.from_regex(r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
# A numeric last label would make the host an IPv4 attempt (refused unless dotted-decimal).
_last_component = st.from_regex(r"[a-zA-Z](?:[a-zA-Z0-9-]{0,8}[a-zA-Z0-9])?", fullmatch=True)
_port = st.integers(min_value=1, max_value=65535).map(lambda p: f":{p}")
_hosts = st.one_of(
    st.none(),  # Docker Hub, implied
    st.sampled_from(["docker.io", "index.docker.io", "DOCKER.IO", "localhost"]),
    st.tuples(st.lists(_domain_component, min_size=1, max_size=2), _last_component, st.one_of(st.just(""), _port)).map(
        lambda t: ".".join([*t[0], t[1]]) + t[2]
    ),
    st.tuples(_last_component, _port).map("".join),  # dot-less host with a port
    st.tuples(st.just("localhost"), _port).map("".join),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).filter(lambda a: embedded_ipv4(a) is None).map(lambda a: f"[{a.exploded}]"),  # IPv6
    st.from_regex(r"[A-Z][a-zA-Z0-9]{0,6}", fullmatch=True),  # dot-less, recognised by its capitals
)
_path_component = st.from_regex(r"[a-z0-9]{1,4}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,4}){0,2}", fullmatch=True)
_tags = st.one_of(st.none(), st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True))
_digests = st.one_of(
    st.none(),
    st.from_regex(r"[0-9a-f]{64}", fullmatch=True).map(lambda h: f"sha256:{h}"),
    st.from_regex(r"[0-9a-f]{128}", fullmatch=True).map(lambda h: f"sha512:{h}"),
)


@st.composite
def valid_references(draw) -> tuple[str, str | None, str | None]:
    host = draw(_hosts)
    components = draw(st.lists(_path_component, min_size=1, max_size=4))
    if host is None and len(components) > 1 and ("." in components[0] or components[0] == "localhost"):
        host = "docker.io"  # without a host, such a first component would be read as one
    path = "/".join(components)
    tag, digest = draw(_tags), draw(_digests)
    text = f"{host}/{path}" if host else path
    if tag is not None:
        text += f":{tag}"
    if digest is not None:
        text += f"@{digest}"
    return text, tag, digest


def _fields(ref: ImageReference) -> tuple[str, str, str | None, str | None]:
    return ref.registry, ref.repository, ref.tag, ref.digest


@settings(max_examples=300, deadline=None)
@given(valid_references())
def test_normalisation_is_idempotent(generated):
    text, tag, digest = generated
    first = parse_reference(text)
    again = parse_reference(str(first))
    assert _fields(again) == _fields(first)
    assert str(again) == str(first)


@settings(max_examples=200, deadline=None)
@given(valid_references())
def test_written_tag_and_digest_survive_parsing(generated):
    text, tag, digest = generated
    ref = parse_reference(text)
    assert ref.digest == digest
    if tag is not None:
        assert ref.tag == tag and not ref.tag_defaulted
    elif digest is not None:
        assert ref.tag is None and not ref.tag_defaulted
    else:
        assert ref.tag == "latest" and ref.tag_defaulted
    assert ref.registry == ref.registry.lower()
    assert "/" not in ref.registry and ref.repository


# --- the canonical registry identity ---------------------------------------------------------------


@pytest.mark.parametrize(
    "text, insecure, registry",
    [
        pytest.param("registry.local:80/app", {"registry.local"}, "registry.local", id="port-80-of-a-plain-http-host-is-dropped"),
        pytest.param("registry.local/app", {"registry.local"}, "registry.local", id="plain-http-host-without-port"),
        pytest.param("registry.local:80/app", set(), "registry.local:80", id="port-80-of-an-https-host-is-kept"),
        pytest.param("registry.local:443/app", {"registry.local:443"}, "registry.local:443",
                     id="plain-http-on-port-443-keeps-its-port"),
        pytest.param("registry.local:5000/app", {"registry.local:5000"}, "registry.local:5000", id="other-port-kept"),
    ],
)
def test_default_port_depends_on_registries_insecure(text, insecure, registry):
    assert parse_reference(text, frozenset(insecure)).registry == registry


def test_https_port_of_a_plain_http_host_has_no_canonical_form():
    with pytest.raises(InvalidReference, match="port 443 of registry.local, which registries.insecure lists as plain HTTP"):
        parse_reference("registry.local:443/app", frozenset({"registry.local"}))


def _ipv4_spellings(value: int) -> list[str]:
    """Ways a C resolver (inet_aton) reads the IPv4 address `value`."""
    parts = [(value >> shift) & 0xFF for shift in (24, 16, 8, 0)]
    return [
        str(value),
        hex(value),
        f"{parts[0]}.{value & 0xFFFFFF}",
        f"{parts[0]}.{parts[1]}.{value & 0xFFFF}",
        ".".join(oct(p).replace("0o", "0") for p in parts),
        ".".join(hex(p) for p in parts),
        ".".join(str(p) for p in parts),
    ]


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=2**32 - 1), st.data())
def test_every_ipv4_spelling_is_refused_or_is_the_dotted_decimal_address(value, data):
    import ipaddress
    import socket

    text = data.draw(st.sampled_from(_ipv4_spellings(value)))
    dotted = str(ipaddress.IPv4Address(value))
    assert socket.inet_ntoa(socket.inet_aton(text)) == dotted  # the resolver's reading of the spelling
    try:
        ref = parse_reference(f"{text}:5000/app")
    except InvalidReference as exc:
        assert "is not an IPv4 address in dotted-decimal form" in str(exc)
        assert text != dotted
    else:
        assert ref.registry == f"{dotted}:5000"
