"""Registry credentials from a mounted `.dockerconfigjson`.

Credentials are bound to one registry host, in canonical form (reference.canonical_registry):
a key `registry.example.com:443` or `https://Registry.Example.com/v1/` is the registry that image
names spell `registry.example.com`, and `localhost:5000` is `127.0.0.1:5000`. The registry client
asks for them by the canonical host it is about to contact, so they are never sent anywhere else.
A key that has no canonical form is a configuration error, not a guess.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field
from typing import AbstractSet, Any, Mapping

from .encoding import b64_strict
from .errors import ConfigError, InvalidReference
from .files import read_regular
from .reference import DOCKER_HUB, DOCKER_HUB_API_HOST, canonical_registry

MAX_AUTH_FILE_BYTES = 1024 * 1024
# Docker Hub credentials appear under any of these keys in docker config files.
_DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")


# Fingerprints tell credentials apart without holding them. `fingerprint` keys what lives in this
# process only (tokens): an HMAC under a random key of the process, cheap, and meaningless outside.
# `stable_fingerprint` reaches cache keys on disk, shared by processes, so it cannot use a process
# key: a fixed salt and enough iterations (about 4 ms) that it is no cheap oracle for guessing a
# short password. Neither is the secret nor reversible.
_PROCESS_KEY = os.urandom(32)
_FINGERPRINT_SALT = b"signgate registry credential fingerprint v1"
_FINGERPRINT_ITERATIONS = 10000


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def _material(self) -> bytes:
        return f"{self.username}\0{self.password}".encode("utf-8", "surrogatepass")

    @property
    def fingerprint(self) -> str:
        """A one-way digest for keys within this process (the registry client's token cache)."""
        return hmac.new(_PROCESS_KEY, self._material(), hashlib.sha256).hexdigest()[:32]

    @property
    def stable_fingerprint(self) -> str:
        """A one-way digest that is the same in every process (verdict cache keys)."""
        cached = _FINGERPRINTS.get((self.username, self.password))
        if cached is None:
            cached = hashlib.pbkdf2_hmac("sha256", self._material(), _FINGERPRINT_SALT, _FINGERPRINT_ITERATIONS).hex()[:32]
            _FINGERPRINTS[(self.username, self.password)] = cached
        return cached


_FINGERPRINTS: dict[tuple[str, str], str] = {}


@dataclass(frozen=True)
class CredentialStore:
    by_host: Mapping[str, Credentials] = field(default_factory=dict, repr=False)

    def for_host(self, host: str) -> Credentials | None:
        """Credentials for the canonical `host[:port]` the client contacts (the registry's API host)."""
        return self.by_host.get(host.lower())

    def candidates(self, host: str, repository: str) -> tuple[Credentials, ...]:
        """Every credential to try for `repository` on `host`, in order (pullsecrets.py has a
        store where there can be several); here the one filed under the host, if any."""
        found = self.for_host(host)
        return (found,) if found is not None else ()


def load_credentials(path: str | None, insecure: AbstractSet[str] = frozenset()) -> CredentialStore:
    if path is None:
        return CredentialStore()
    try:
        raw = read_regular(path, MAX_AUTH_FILE_BYTES)  # a FIFO is refused, not waited on
    except OSError as exc:
        raise ConfigError(f"registries.auth: cannot read {path}: {exc.strerror}") from None
    if len(raw) > MAX_AUTH_FILE_BYTES:
        raise ConfigError(f"registries.auth: {path} is larger than 1 MiB")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ConfigError(f"registries.auth: {path} is not valid JSON (expected a .dockerconfigjson)") from None
    return parse_docker_config(data, path, insecure)


def parse_docker_config(data: Any, path: str, insecure: AbstractSet[str] = frozenset()) -> CredentialStore:
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        raise ConfigError(f"registries.auth: {path} has no 'auths' object (expected a .dockerconfigjson)")
    store: dict[str, Credentials] = {}
    for key, entry in auths.items():
        where = f"registries.auth: {path}: auths[{key!r}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} is not an object")
        credentials = _entry_credentials(entry, where)
        try:
            host = _host_for_key(str(key), insecure)
        except InvalidReference as exc:
            raise ConfigError(f"{where}: {exc}") from None
        store[host] = credentials
    return CredentialStore(store)


class AuthFieldError(ValueError):
    """A docker config `auth` field that is not base64 of username:password; the message completes
    "its auth ..." and says which part is wrong."""


def parse_auth_field(auth: str) -> Credentials:
    """A docker config `auth` field (mounted registries.auth and pods' pull secrets alike)."""
    raw = b64_strict(auth)
    try:
        decoded = raw.decode("utf-8") if raw is not None else None
    except UnicodeDecodeError:
        decoded = None
    if decoded is None:
        raise AuthFieldError("is not valid base64 of username:password")
    username, sep, password = decoded.partition(":")
    if not sep:
        raise AuthFieldError("does not decode to username:password")
    return Credentials(username, password)


def _entry_credentials(entry: Mapping[str, Any], where: str) -> Credentials:
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        # Say which part is wrong: "neither auth nor username/password" would send the reader
        # looking for a field that is there.
        try:
            return parse_auth_field(auth)
        except AuthFieldError as exc:
            raise ConfigError(f"{where}.auth {exc}") from None
    username, password = entry.get("username"), entry.get("password")
    if isinstance(username, str) and isinstance(password, str):
        return Credentials(username, password)
    raise ConfigError(f"{where} has neither 'auth' nor username/password")


def _host_for_key(key: str, insecure: AbstractSet[str]) -> str:
    """The canonical API host a docker config key stands for: scheme and path are dropped."""
    if key in _DOCKER_HUB_KEYS:
        return DOCKER_HUB_API_HOST
    registry = canonical_registry(key.split("://", 1)[-1].split("/", 1)[0], insecure)
    return DOCKER_HUB_API_HOST if registry == DOCKER_HUB else registry
