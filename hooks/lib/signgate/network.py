"""Which hosts signgate may contact.

Every image name in a Pod spec is chosen by whoever creates the Pod, so without a check the hook
could be pointed at the cluster's own loopback services or a cloud metadata endpoint
(169.254.169.254) from inside the cluster network. Two rules:

1. signgate contacts only registries that a policy rule can match: an image that matches no rule,
   or a static allow/deny rule, causes no request at all (decision.py never builds a client for
   it). This module sees only hosts that got that far, plus token services that a registry names
   in its challenge and redirect targets.
2. Loopback, link-local (which includes the metadata endpoints), unspecified and multicast
   addresses are refused, both as literal hosts and as what a host name resolves to, unless
   the configuration names the host explicitly: as the literal registry of a policy pattern
   (`127.0.0.1:5000/**`, no wildcard in the host), in `registries.insecure`, as a rule's
   `signatureRepository`, or as a Notary server. Naming a host allows it on any port.

A name is resolved here and again by the HTTP library when it connects; a DNS answer that changes
in between (rebinding) is not caught. Keep registries on names you control.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import urllib.parse
from dataclasses import dataclass, field

from .config import Config
from .reference import parse_reference

_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


def split_host(host: str) -> str:
    """'registry:5000' -> 'registry'; '[::1]:5000' -> '::1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.index("]")] if "]" in host else host
    if host.count(":") == 1:
        return host.rsplit(":", 1)[0]
    return host


def refused_address(address: str) -> str | None:
    """Why an IP address must not be contacted, or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in _METADATA:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_unspecified:
        return "an unspecified address"
    if ip.is_multicast:
        return "a multicast address"
    return None


@dataclass
class HostPolicy:
    named: frozenset[str]  # hosts (without port) the configuration names explicitly
    resolve: bool = True
    _verdicts: dict[str, str | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_config(cls, config: Config) -> "HostPolicy":
        named: set[str] = {split_host(h) for h in config.registries.insecure}
        for rule in config.policy:
            registry = rule.images.split("/", 1)[0]
            if "*" not in registry and ("." in registry or ":" in registry or registry == "localhost"):
                named.add(split_host(registry))
            if rule.signature_repository:
                named.add(split_host(parse_reference(rule.signature_repository).registry))
            if rule.notary is not None:
                netloc = urllib.parse.urlsplit(rule.notary.server).netloc
                named.add(split_host(netloc))
        return cls(frozenset(named))

    def check(self, host: str) -> str | None:
        """None when `host` may be contacted, else a reason for the denial message."""
        bare = split_host(host)
        if bare in self.named:
            return None
        # Keyed by host and port: the verdict's message names the host as it was asked for.
        key = host.strip().lower()
        with self._lock:
            if key in self._verdicts:
                return self._verdicts[key]
        verdict = self._judge(host, bare)
        with self._lock:
            self._verdicts[key] = verdict
        return verdict

    def _judge(self, host: str, bare: str) -> str | None:
        hint = " (name the host in a policy rule or registries.insecure to allow it)"
        literal = refused_address(bare)
        if literal:
            return f"refusing to contact {host}: {literal}{hint}"
        if bare == "localhost" or bare.endswith(".localhost"):
            return f"refusing to contact {host}: a loopback name{hint}"
        try:
            ipaddress.ip_address(bare)
            return None  # a literal, public address
        except ValueError:
            pass
        if not self.resolve:
            return None
        try:
            infos = socket.getaddrinfo(bare, None, proto=socket.IPPROTO_TCP)
        except (socket.gaierror, UnicodeError, OSError):
            return None  # the connection attempt reports "host name not found" with context
        for info in infos:
            address = info[4][0]
            reason = refused_address(str(address))
            if reason:
                return f"refusing to contact {host}: it resolves to {address}, {reason}{hint}"
        return None
