"""Fetching trust data from a Notary server: `GET /v2/<GUN>/_trust/tuf/<role>.json`.

Built on the registry client, so that auth, TLS, size caps, the host guard and the deadline work
as for registries. The client words its messages for a Notary server (registry.Wording), and the
fetcher turns its typed errors into the NotaryError of the same kind.
"""

from __future__ import annotations

import urllib.parse

from ...deadline import Deadline
from ...errors import (
    DeadlineExceeded,
    InvalidReference,
    NotFound,
    RegistryAuthError,
    RegistryError,
    RegistryUnreachable,
    TooLarge,
)
from ...reference import canonical_endpoint, endpoint_netloc
from ...registry import RegistryClient, Wording
from ...settings import Limits, RegistrySettings
from .errors import NotaryAuthError, NotaryError, NotaryTooLarge, NotaryUnreachable

ACCEPT = "application/json"

# The registry client's error kinds and the Notary error that says the same (else NotaryError).
_ERRORS: tuple[tuple[type[RegistryError], type[NotaryError]], ...] = (
    (RegistryUnreachable, NotaryUnreachable),
    (RegistryAuthError, NotaryAuthError),
    (TooLarge, NotaryTooLarge),
)


def notary_wording(server: str, host: str) -> Wording:
    """The registry client's words for a Notary server: its URL where a registry's host would be."""
    return Wording(
        server="the Notary server",
        ca_setting="the rule's notary.caBundle",
        own_host=host,
        own_name=f"Notary server {server}",
    )


class NotaryFetcher:
    """`Fetch` (trust_data.py) for one GUN on one Notary server. Transport errors raise the
    NotaryError of their kind; a file the server does not have is None."""

    def __init__(
        self,
        server: str,
        gun: str,
        *,
        deadline: Deadline,
        limits: Limits,
        ca_bundle: str | None = None,
        client: RegistryClient | None = None,
    ) -> None:
        parts = urllib.parse.urlsplit(server)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise NotaryError(f"Notary server {server!r} is not an http(s) URL")
        self.server = server.rstrip("/")
        try:
            # Canonical, as registry hosts are (reference.canonical_endpoint).
            self.host = endpoint_netloc(*canonical_endpoint(parts.netloc, parts.scheme), parts.scheme)
        except InvalidReference as exc:
            raise NotaryError(f"Notary server {server!r}: {exc}") from None
        self.gun = gun
        insecure = frozenset({self.host}) if parts.scheme == "http" else frozenset()
        settings = RegistrySettings(ca_bundle=ca_bundle, insecure=insecure)
        wording = notary_wording(self.server, self.host)
        if client is not None:
            # Same credentials (a pull secret may carry the Notary host), host policy and request log.
            self.http = client.for_server(settings, wording)
        else:
            self.http = RegistryClient(settings, limits, deadline, wording=wording)

    def __call__(self, role: str, max_bytes: int) -> bytes | None:
        what = f"{role}.json of {self.gun} from Notary server {self.server}"
        path = f"/v2/{urllib.parse.quote(self.gun, safe='/:')}/_trust/tuf/{role}.json"
        try:
            return self.http.get_bytes(self.host, self.gun, path, accept=ACCEPT, what=what, max_bytes=max_bytes)
        except NotFound:
            return None
        except DeadlineExceeded:
            raise
        except RegistryError as exc:
            kind = next((notary for registry, notary in _ERRORS if isinstance(exc, registry)), NotaryError)
            raise kind(exc.message, log_detail=exc.log_detail) from None

    def close(self) -> None:
        self.http.close()
