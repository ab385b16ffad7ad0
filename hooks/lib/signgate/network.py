"""Which hosts and ports signgate may contact.

Every image name in a Pod spec is chosen by whoever creates the Pod, so without a check the hook
could be pointed at the cluster's own services (a Service IP on 6379), its loopback services or a
cloud metadata endpoint (169.254.169.254) from inside the cluster network. The rules:

1. signgate contacts only registries that a policy rule can match: an image that matches no rule,
   or a static allow/deny rule, causes no request at all (decision.py never builds a client for
   it). This module sees only hosts that got that far, plus token services that a registry names
   in its challenge and redirect targets.
2. Hosts are judged in canonical form (reference.canonical_endpoint): `localhost:5000`,
   `LOCALHOST.:5000` and `127.0.0.1:5000` are one endpoint, and spellings with no single reading
   (`127.1`, `2130706433`, `[::ffff:7f00:1]`) are refused before anything else.
3. An endpoint that the configuration names is allowed: the literal registry of a policy pattern
   (`127.0.0.1:5000/**`, no wildcard in the host), an entry of `registries.insecure`, a rule's
   `signatureRepository` or a Notary server. Naming allows that host on the named port only, or
   on the scheme's default port (443, or 80 for plain HTTP) when no port is written. A token
   service that an allowed registry's challenge names stays allowed on its own port when its
   host is named.
4. Any other endpoint is judged by its address (a literal, or each address its name resolves to):
   - loopback, link-local (which includes the metadata endpoints), unspecified and multicast
     addresses are refused;
   - internal addresses (private RFC 1918 ranges, carrier-grade NAT 100.64.0.0/10, unique local
     fc00::/7 and other non-global ranges) are refused unless `registries.allowNetworks` lists a
     network that holds them;
   - any other (public) address is allowed, on any port.

For an endpoint allowed only by rule 4, a failed connection is reported as "unreachable" in the
denial and in detail only in the log (registry.py): what a port answers must not be readable in
`kubectl` output, or the webhook is a port scanner. Named endpoints keep their detailed messages.

A name is resolved here and again by the HTTP library when it connects; a DNS answer that changes
in between (rebinding) is not caught. Keep registries on names you control.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from dataclasses import dataclass, field
from typing import AbstractSet

from .settings import Config
from .errors import InvalidReference
from .reference import (
    canonical_endpoint,
    canonical_registry,
    embedded_ipv4,
    registry_endpoint,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
# Internal ranges named in messages; any other non-global address is "a reserved address".
_INTERNAL = tuple(
    (ipaddress.ip_network(network), what)
    for network, what in (
        ("10.0.0.0/8", "a private address"),
        ("172.16.0.0/12", "a private address"),
        ("192.168.0.0/16", "a private address"),
        ("100.64.0.0/10", "a carrier-grade NAT address"),
        ("fc00::/7", "a unique local address"),
        ("fec0::/10", "a site-local address"),
    )
)
# What registries.allowNetworks can never open: these are reached only by naming the endpoint.
_NEVER_BY_NETWORK = tuple(
    ipaddress.ip_network(network)
    for network in ("0.0.0.0/8", "127.0.0.0/8", "169.254.0.0/16", "224.0.0.0/4", "::/127", "fe80::/10", "ff00::/8")
)
_HINT_NAME = " (name the host and port in a policy rule or registries.insecure to allow it)"
_HINT_NETWORK = " (name the host and port in a policy rule, or its network in registries.allowNetworks, to allow it)"


def parse_allowed_network(text: str) -> IPNetwork:
    """A `registries.allowNetworks` entry, or ValueError saying what is wrong with it."""
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(
            f"{text!r} is not a network in CIDR form such as 10.0.0.0/8 or fd00::/8 ({exc})"
        ) from None
    if isinstance(network, ipaddress.IPv6Network) and (
        embedded_ipv4(network.network_address) is not None or embedded_ipv4(network.broadcast_address) is not None
    ):
        raise ValueError(f"{text!r} spells IPv4 addresses in IPv6; list the IPv4 network instead")
    # One spelling per network, as for hosts; a bare address stands for itself (/32 or /128).
    if text.lower() not in (str(network), str(network.network_address)):
        raise ValueError(f"{text!r}: write the network as {str(network)!r}")
    for never in _NEVER_BY_NETWORK:
        if network.version == never.version and network.overlaps(never):  # type: ignore[arg-type]
            raise ValueError(
                f"{text!r} overlaps {never} (loopback, link-local, unspecified or multicast), which is never "
                "opened by network: name such a registry's host and port in a policy rule instead"
            )
    return network


def address_problem(address: IPAddress, allowed: tuple[IPNetwork, ...] = ()) -> tuple[str, bool] | None:
    """Why an address must not be contacted, and whether allowNetworks could open it; or None."""
    if isinstance(address, ipaddress.IPv6Address) and embedded_ipv4(address) is not None:
        address = embedded_ipv4(address)  # type: ignore[assignment]  # judged as the IPv4 host it reaches
    if address in _METADATA:
        return "a cloud metadata address", False
    if address.is_loopback:
        return "a loopback address", False
    if address.is_link_local:
        return "a link-local address", False
    if address.is_unspecified:
        return "an unspecified address", False
    if address.is_multicast:
        return "a multicast address", False
    if any(address in network for network in allowed):
        return None
    for network, what in _INTERNAL:
        if address in network:
            return what, True
    if not address.is_global:
        return "a reserved address", True
    return None


@dataclass
class HostPolicy:
    named: frozenset[tuple[str, int]]  # (canonical host, port) endpoints the configuration names
    allow_networks: tuple[IPNetwork, ...] = ()
    resolve: bool = True
    _verdicts: dict[tuple[str, int], str | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_config(cls, config: Config, verifier_endpoints: AbstractSet[tuple[str, int]] = frozenset()) -> "HostPolicy":
        """The policy for a configuration; `verifier_endpoints`: the hosts its rules' verifiers
        name beyond the image registries (verifiers.verifier_endpoints)."""
        insecure = config.registries.insecure
        named = {canonical_endpoint(entry, "http") for entry in insecure} | set(verifier_endpoints)
        for rule in config.policy:
            registry = rule.images.split("/", 1)[0]
            if "*" not in registry and ("." in registry or ":" in registry or registry.startswith("[")):
                named.add(registry_endpoint(canonical_registry(registry, insecure), insecure))
        networks = tuple(ipaddress.ip_network(text) for text in config.registries.allow_networks)
        return cls(frozenset(named), networks)

    def is_named(self, netloc: str, scheme: str) -> bool:
        """The configuration names this endpoint: its failures may be reported in detail."""
        try:
            return canonical_endpoint(netloc, scheme) in self.named
        except InvalidReference:
            return False

    def check(self, netloc: str, scheme: str = "https", role: str = "registry") -> str | None:
        """None when `netloc` may be contacted over `scheme`, else a reason for the denial message.

        `role` is "registry", "redirect" or "token" (a token service named by an allowed
        registry's challenge: allowed on any port of a named host, as before ports were checked).
        """
        try:
            endpoint = canonical_endpoint(netloc, scheme)
        except InvalidReference as exc:
            return f"refusing to contact {netloc}: {exc}"
        if endpoint in self.named:
            return None
        if role == "token" and any(endpoint[0] == host for host, _ in self.named):
            return None
        with self._lock:
            if endpoint in self._verdicts:
                verdict = self._verdicts[endpoint]
                return None if verdict is None else f"refusing to contact {netloc}: {verdict}"
        verdict = self._judge(endpoint[0])
        with self._lock:
            self._verdicts[endpoint] = verdict
        return None if verdict is None else f"refusing to contact {netloc}: {verdict}"

    def _judge(self, host: str) -> str | None:
        try:
            literal = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            literal = None
        if literal is not None:
            problem = address_problem(literal, self.allow_networks)
            return None if problem is None else problem[0] + (_HINT_NETWORK if problem[1] else _HINT_NAME)
        if not self.resolve:
            return None
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError, OSError):
            return None  # the connection attempt reports "host name not found" with context
        for info in infos:
            address = str(info[4][0])
            try:
                resolved = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                continue
            problem = address_problem(resolved, self.allow_networks)
            if problem:
                hint = _HINT_NETWORK if problem[1] else _HINT_NAME
                return f"it resolves to {address}, {problem[0]}{hint}"
        return None
