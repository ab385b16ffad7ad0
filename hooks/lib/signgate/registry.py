"""A minimal client for the OCI distribution API, built on `requests`.

What it guarantees to the rest of signgate:

- every manifest and blob it returns hashes to the digest it was asked for (or, for a tag, the
  digest is computed from the bytes received and checked against `Docker-Content-Digest`);
- no body larger than its cap is read: reads are streamed and stop at the cap;
- every wait is bounded by the request's Deadline, also between the chunks of a slow body;
- credentials go only to the registry host they belong to, and to the token service that this
  registry names in its challenge, and never follow a redirect to another host;
- only hosts that `host_allowed` accepts are contacted, always under their canonical name
  (reference.canonical_endpoint: a redirect to `localhost:5000` goes to 127.0.0.1:5000);
- a connection failure on a host that `host_named` does not vouch for reads only "unreachable",
  with the cause in the exception's log_detail (network.py says why).

`requests` is imported when a client is created, never at module import, because it is the most
expensive import of the hook.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import os
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from .settings import Limits, RegistrySettings
from .credentials import CredentialStore, Credentials
from .deadline import Deadline
from .errors import (
    BadResponse,
    DeadlineExceeded,
    DigestMismatch,
    HostNotAllowed,
    InvalidReference,
    NotFound,
    RegistryAuthError,
    RegistryError,
    RegistryRateLimited,
    RegistryUnreachable,
    TooLarge,
)
from .media_types import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from .reference import canonical_endpoint, endpoint_netloc

MANIFEST_ACCEPT = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_ATTEMPTS = 3
MAX_REDIRECTS = 3
MAX_TOKEN_BYTES = 64 * 1024
CHUNK = 64 * 1024
USER_AGENT = "signgate"
# A body nobody needs (a 401 before the token, a 404, a redirect, an error) is read and discarded
# when it is this small, so that its connection goes back to the pool: closing it unread makes
# urllib3 drop the connection, and the next request then pays a new TCP and TLS handshake (2-3
# round trips, issue 18). A larger body, or one without a length that does not end within the cap
# or DRAIN_SECONDS, is not worth waiting for: the connection is closed, as before.
DRAIN_CAP = 64 * 1024
# Connections kept per host and Session (urllib3's pool; requests keeps 10). The images of one
# admission are verified at once, each with up to 8 lookups in flight (verify.MAX_PARALLEL_FETCHES):
# with 10 kept, 10 images opened 20 new connections in every admission, even in a warm worker,
# each a TCP and a TLS handshake on the critical path (issue 18).
POOL_CONNECTIONS = 32
DRAIN_SECONDS = 0.5


@dataclass(frozen=True)
class Manifest:
    digest: str
    media_type: str
    body: bytes = field(repr=False)
    data: dict[str, Any] = field(repr=False)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES or (
            isinstance(self.data.get("manifests"), list) and "layers" not in self.data
        )

    @property
    def size(self) -> int:
        return len(self.body)


@dataclass
class RequestRecord:
    """One HTTP exchange, for logs and metrics."""

    host: str
    method: str
    path: str
    status: int | None
    seconds: float


@dataclass(frozen=True)
class Wording:
    """How the client's messages name the server it talks to.

    A Notary server speaks the registry's HTTP, token authentication and TLS, so the Notary
    fetcher uses this client with its own words (`the Notary server`, its URL, its caBundle
    setting) instead of rewriting the registry's messages afterwards.
    """

    server: str = "the registry"  # "access denied by the registry (403)"
    ca_setting: str = "registries.caBundle"  # where a missing CA is configured
    own_host: str | None = None  # the canonical host[:port] that `own_name` names
    own_name: str = ""

    def host(self, host: str) -> str:
        """`registry <host>`, or the client's own name for its own host."""
        return self.own_name if self.own_host is not None and host == self.own_host else f"registry {host}"


REGISTRY_WORDING = Wording()


def digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def verify_digest(data: bytes, expected: str, what: str) -> None:
    algorithm = expected.partition(":")[0]
    if algorithm not in ("sha256", "sha512"):
        raise DigestMismatch(f"{what}: digest algorithm {algorithm!r} is not supported")
    actual = digest_of(data, algorithm)
    if actual != expected:
        raise DigestMismatch(f"{what}: the registry sent bytes with digest {actual}, not the requested {expected}")


class RegistryClient:
    def __init__(
        self,
        settings: RegistrySettings,
        limits: Limits,
        deadline: Deadline,
        credentials: CredentialStore | None = None,
        host_allowed: Callable[[str, str, str], str | None] | None = None,
        host_named: Callable[[str, str], bool] | None = None,
        wording: Wording = REGISTRY_WORDING,
    ) -> None:
        import requests  # noqa: F401  (deferred: see the module docstring)

        self._requests = requests
        self.settings = settings
        self.limits = limits
        self.deadline = deadline
        self.credentials = credentials or CredentialStore()
        # (host[:port], scheme, role) -> a reason to refuse the host, or None to allow it.
        self.host_allowed = host_allowed or (lambda host, scheme, role: None)
        # (host[:port], scheme) -> True when the configuration names the host: errors in detail.
        self.host_named = host_named or (lambda host, scheme: True)
        self.wording = wording
        # Connections, tokens and Basic hosts: this client's own (the hook: one admission per
        # process), or the process's warm pool when the verifier service's long-lived worker has
        # enabled it (enable_warm_pool). Either way everything in it is filed under the credential
        # that obtained or used it (its fingerprint, "" when anonymous): one credential's token or
        # connection never serves another's request.
        self._pool = _WARM_POOL if _WARM_POOL is not None else WarmPool(shared=False)
        self._proxies: dict[str, dict[str, str]] = {}
        # The tokens this client uses, whatever their age: a token taken or obtained during this
        # admission serves it to its end (a 401 fetches a new one); the pool decides reuse by others.
        self._tokens: dict[tuple[str, str, str], str] = {}
        self._tls_context: Any = None
        # (host, scope) -> the credentials to try, in order, and which one is in use (pullsecrets.py:
        # several pull-secret entries may match; each is tried in turn on a 401).
        self._candidate_lists: dict[tuple[str, str], tuple[Credentials, ...]] = {}
        self._chosen: dict[tuple[str, str], int] = {}
        # (host, scope, fingerprint) -> held while one thread fetches that token: the threads of one
        # admission (its images, and the concurrent lookups of each) share one token, not one each.
        self._token_fetches: dict[tuple[str, str, str], threading.Lock] = {}
        self._lock = threading.Lock()
        self.records: list[RequestRecord] = []

    # ---- public API -------------------------------------------------------------------------

    def for_server(self, settings: RegistrySettings, wording: Wording) -> RegistryClient:
        """A client for another server speaking the registry protocol (a Notary server), with this
        client's limits, deadline, credentials (a pull secret may carry that host), host policy
        and request log."""
        client = RegistryClient(
            settings, self.limits, self.deadline, self.credentials, self.host_allowed, self.host_named, wording
        )
        client.records = self.records
        return client

    def get_manifest(self, host: str, repository: str, reference: str, *, accept: str = MANIFEST_ACCEPT) -> Manifest:
        """Fetch a manifest by tag or digest. Raises NotFound on 404."""
        path = f"/v2/{repository}/manifests/{reference}"
        what = f"manifest {host}/{repository}:{reference}" if ":" not in reference else f"manifest {host}/{repository}@{reference}"
        with self._get(host, repository, path, accept=accept, what=what) as response:
            body = self._read_capped(response, self.limits.max_manifest_bytes, what)
            header_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
            header_digest = response.headers.get("Docker-Content-Digest")
        if reference.startswith(("sha256:", "sha512:")):
            verify_digest(body, reference, what)
            digest = reference
        else:
            digest = digest_of(body)
            if header_digest and header_digest.startswith("sha256:") and header_digest != digest:
                raise DigestMismatch(
                    f"{what}: the registry says digest {header_digest} but sent bytes with digest {digest}"
                )
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: deeply nested JSON
            raise BadResponse(f"{what} is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadResponse(f"{what} is not a JSON object")
        media_type = data.get("mediaType") if isinstance(data.get("mediaType"), str) else header_type
        return Manifest(digest=digest, media_type=media_type or "", body=body, data=data)

    def get_blob(self, host: str, repository: str, digest: str, max_bytes: int | None = None) -> bytes:
        """Fetch a blob and check it against its digest. Follows redirects (blobs may sit on a CDN)."""
        cap = self.limits.max_blob_bytes if max_bytes is None else max_bytes
        what = f"blob {host}/{repository}@{digest}"
        path = f"/v2/{repository}/blobs/{digest}"
        with self._get(host, repository, path, accept="*/*", what=what, follow_redirects=True) as response:
            body = self._read_capped(response, cap, what)
        verify_digest(body, digest, what)
        return body

    def get_bytes(self, host: str, repository: str, path: str, *, accept: str, what: str, max_bytes: int) -> bytes:
        """GET any document under /v2/ as raw bytes, capped (Notary's TUF files: their hashes and
        lengths are checked by the caller against the metadata that lists them)."""
        with self._get(host, repository, path, accept=accept, what=what) as response:
            return self._read_capped(response, max_bytes, what)

    def get_referrers(self, host: str, repository: str, digest: str, max_descriptors: int) -> list[dict[str, Any]] | None:
        """Descriptors from the OCI referrers API, following `Link` pagination.

        Returns None when the registry has no referrers API (404, 400 or 406, or an answer that is
        not an OCI index): the caller then reads the fallback tag instead. Stops at
        `max_descriptors`, so a registry listing thousands of referrers costs bounded work.
        """
        path: str | None = f"/v2/{repository}/referrers/{digest}"
        what = f"referrers of {host}/{repository}@{digest}"
        descriptors: list[dict[str, Any]] = []
        pages = 0
        while path and len(descriptors) < max_descriptors and pages < 16:
            pages += 1
            response = self._get(host, repository, path, accept=OCI_INDEX, what=what, passthrough=frozenset({400, 404, 406}))
            if response.status_code != 200:
                self._discard(response)
                return None if pages == 1 else descriptors
            content_type = (response.headers.get("Content-Type") or "").split(";")[0].strip()
            link = response.headers.get("Link")
            body = self._read_capped(response, self.limits.max_manifest_bytes, what)
            if content_type != OCI_INDEX:
                return None if pages == 1 else descriptors
            try:
                data = json.loads(body)
            except (ValueError, UnicodeDecodeError, RecursionError):
                raise BadResponse(f"{what} is not valid JSON") from None
            manifests = data.get("manifests") if isinstance(data, dict) else None
            if not isinstance(manifests, list):
                if pages == 1:
                    return None
                raise BadResponse(f"{what}: a page is not an OCI index")
            descriptors.extend(m for m in manifests if isinstance(m, dict))
            path = _next_link(link, host, self._scheme(host))
        return descriptors[:max_descriptors]

    def close(self) -> None:
        if not self._pool.shared:
            self._pool.close()

    # ---- transport --------------------------------------------------------------------------

    def _scheme(self, host: str) -> str:
        return "http" if host.lower() in self.settings.insecure else "https"

    def _session(self, host: str, fingerprint: str) -> tuple[Any, bool]:
        """The Session for `host` used on behalf of the credential `fingerprint`, and whether it
        comes from an earlier admission (its connections may have been closed by the registry)."""
        if self._tls_context is None:
            self._tls_context = shared_tls_context(self.settings.ca_bundle or None, self.wording.ca_setting)
        context = self._tls_context
        # The TLS context stands for the trust (certifi, plus the caBundle's content when it has
        # one): a changed bundle yields a new context, hence new connections verified under it.
        key = (host, id(context), fingerprint)
        return self._pool.session(key, context, lambda: self._new_session(context))

    def _new_session(self, context: Any) -> Any:
        session = self._requests.Session()
        # No .netrc and no environment CA overrides; proxies are passed explicitly.
        session.trust_env = False
        # No cookies: a registry's session cookie must not carry one credential's login
        # into a request made with another's (pull secrets of other pods, pullsecrets.py).
        import http.cookiejar

        session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        session.headers["User-Agent"] = USER_AGENT
        session.headers["Accept-Encoding"] = "identity"
        session.verify = True
        session.mount("https://", _adapter_with_context(self._requests, context))
        session.mount("http://", self._requests.adapters.HTTPAdapter(pool_maxsize=POOL_CONNECTIONS))
        return session

    def _proxies_for(self, url: str) -> dict[str, str]:
        # The environment's proxies and NO_PROXY depend only on scheme and host; reading them
        # walks the whole environment, which is worth doing once per host, not per request.
        parts = urllib.parse.urlsplit(url)
        key = f"{parts.scheme}://{parts.netloc}"
        with self._lock:
            found = self._proxies.get(key)
        if found is None:
            found = self._requests.utils.get_environ_proxies(key + "/")
            with self._lock:
                self._proxies[key] = found
        return found

    def _verify_host(self, host: str, scheme: str, role: str = "registry") -> None:
        problem = self.host_allowed(host, scheme, role)
        if problem:
            raise HostNotAllowed(problem)

    def _checked_url(self, url: str, netloc: str, role: str) -> tuple[str, str]:
        """A redirect or token URL that may be contacted, rewritten to its canonical host[:port]."""
        scheme = urllib.parse.urlsplit(url).scheme
        self._verify_host(netloc, scheme, role)
        try:
            host, port = canonical_endpoint(netloc, scheme)
        except InvalidReference as exc:  # only when host_allowed does not canonicalise itself
            raise HostNotAllowed(f"refusing to contact {netloc}: {exc}") from None
        canonical = endpoint_netloc(host, port, scheme)
        return urllib.parse.urlunsplit(urllib.parse.urlsplit(url)._replace(netloc=canonical)), canonical

    def _get(
        self,
        host: str,
        repository: str,
        path: str,
        *,
        accept: str,
        what: str,
        follow_redirects: bool = False,
        passthrough: frozenset[int] = frozenset(),
    ) -> Any:
        """GET with auth, retries and redirects; returns an open streaming response with status 200
        (or with a status in `passthrough`, which the caller handles)."""
        self._verify_host(host, self._scheme(host))
        scope = f"repository:{repository}:pull"
        url = f"{self._scheme(host)}://{host}{path}"
        attempt = 0
        auth_tried = False
        while True:
            attempt += 1
            headers = {"Accept": accept}
            fingerprint = self._fingerprint(host, scope)
            authorization = self._authorization(host, scope)
            if authorization:
                headers["Authorization"] = authorization
            response = self._send(host, url, headers, what, fingerprint)
            status = response.status_code
            if status == 401 and (not auth_tried or self._next_credentials(host, scope, failed=fingerprint)):
                # The first 401 asks for a login; a later one refuses the credential just used,
                # and the next candidate (another matching pull-secret entry) is tried.
                auth_tried = True
                challenge = response.headers.get("WWW-Authenticate", "")
                self._discard(response)
                self._authenticate_any(host, scope, challenge, what, stale=authorization)
                continue
            if status == 401:
                self._discard(response)
                raise RegistryAuthError(f"{what}: {self.wording.server} rejected the credentials (401){self._note()}")
            if status == 403:
                self._discard(response)
                raise RegistryAuthError(f"{what}: access denied by {self.wording.server} (403)")
            if status in RETRY_STATUSES:
                header = response.headers.get("Retry-After")
                wait = _retry_after(header, attempt)
                self._discard(response)
                if attempt >= MAX_ATTEMPTS:
                    raise self._status_error(status, what, attempt)
                left = self.deadline.remaining()
                if wait >= left:
                    raise self._cannot_wait_error(status, what, attempt, _parse_retry_after(header), left)
                time.sleep(wait)
                continue
            if follow_redirects and status in (301, 302, 303, 307, 308):
                response = self._follow_redirects(host, url, response, accept, what, scope, self._fingerprint(host, scope))
                status = response.status_code
            if status in passthrough:
                return response
            if status == 404:
                self._discard(response)
                raise NotFound(f"{what} not found")
            if status != 200:
                self._discard(response)
                raise BadResponse(f"{what}: unexpected HTTP status {status}")
            return response

    def _status_error(self, status: int, what: str, attempts: int) -> RegistryError:
        if status == 429:
            return RegistryRateLimited(f"{what}: rate-limited by {self.wording.server} (429) after {attempts} attempts")
        return RegistryUnreachable(f"{what}: {self.wording.server} answered HTTP {status} after {attempts} attempts")

    def _cannot_wait_error(
        self, status: int, what: str, attempts: int, asked: float | None, left: float
    ) -> RegistryError:
        """The error when the wait before a retry would not end within the deadline.

        It names the registry's Retry-After for 5xx answers too (the README promises "fails at once,
        with that reason"), and compares it with what is left of the deadline when that is what
        stops the retry: "retry after 5 s, beyond the 8 s deadline" would be false.
        """
        if asked is None:  # our own backoff does not fit: the plain status error says enough
            return self._status_error(status, what, attempts)
        seconds = self.deadline.seconds
        if asked >= seconds:
            limit = f"beyond the {seconds:g} s deadline"
        else:
            limit = f"more than the {left:.1f} s left of the {seconds:g} s deadline"
        request = f"it asks to retry after {asked:g} s, {limit}"
        if status == 429:
            return RegistryRateLimited(f"{what}: rate-limited by {self.wording.server} (429); {request}")
        return RegistryUnreachable(f"{what}: {self.wording.server} answered HTTP {status}; {request}")

    def _send(self, host: str, url: str, headers: dict[str, str], what: str, fingerprint: str) -> Any:
        requests = self._requests
        timeout = (
            self.deadline.timeout(self.limits.connect_timeout_seconds),
            self.deadline.timeout(self.limits.read_timeout_seconds),
        )
        proxies = self._proxies_for(url)
        started = time.monotonic()
        status = None
        session, warm = self._session(host, fingerprint)
        try:
            try:
                response = session.get(
                    url, headers=headers, timeout=timeout, stream=True, allow_redirects=False, proxies=proxies
                )
            except requests.exceptions.ConnectionError as exc:
                # A connection kept from an earlier admission may have been closed by the registry
                # (its idle timeout) just as this request went out. A GET is safe to send again,
                # once, on a new connection; a refused or timed-out connect is not that case.
                if not warm or isinstance(exc, (requests.exceptions.ConnectTimeout, requests.exceptions.SSLError,
                                                requests.exceptions.ProxyError)) or self.deadline.expired():
                    raise
                self._pool.discard_connections(session)
                response = session.get(
                    url, headers=headers, timeout=(
                        self.deadline.timeout(self.limits.connect_timeout_seconds),
                        self.deadline.timeout(self.limits.read_timeout_seconds),
                    ), stream=True, allow_redirects=False, proxies=proxies
                )
            status = response.status_code
            return response
        except requests.exceptions.RequestException as exc:
            error = self._transport_error(exc, host, what)
            if isinstance(error, RegistryUnreachable) and not self.host_named(host, urllib.parse.urlsplit(url).scheme):
                # Only a wildcard rule allows this host: whether its port refused, timed out or
                # spoke something other than TLS must not be readable in kubectl (network.py).
                error = RegistryUnreachable(
                    f"{self.wording.host(host)} unreachable (the cause is in the signgate log)", log_detail=str(error)
                )
            raise error from None
        finally:
            path = urllib.parse.urlsplit(url).path
            with self._lock:
                self.records.append(RequestRecord(host, "GET", path, status, time.monotonic() - started))

    def _transport_error(self, exc: Exception, host: str, what: str) -> RegistryError | DeadlineExceeded:
        requests = self._requests
        wording = self.wording
        if isinstance(exc, requests.exceptions.SSLError):
            return RegistryUnreachable(f"{what}: TLS verification of {host} failed ({_tls_problem(exc, wording)})")
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return RegistryUnreachable(f"{wording.host(host)} unreachable: connection timed out")
        if isinstance(exc, requests.exceptions.ReadTimeout):
            if self.deadline.expired():
                return DeadlineExceeded(f"not verified within {self.deadline.seconds:g} s")
            return RegistryUnreachable(f"{wording.host(host)} did not answer in time")
        if isinstance(exc, requests.exceptions.ConnectionError):
            return RegistryUnreachable(f"{wording.host(host)} unreachable: {_connection_problem(exc, wording)}")
        return RegistryUnreachable(f"{wording.host(host)}: request failed ({type(exc).__name__})")

    def _follow_redirects(
        self, host: str, url: str, response: Any, accept: str, what: str, scope: str | None = None, fingerprint: str = ""
    ) -> Any:
        current_url = url
        for _ in range(MAX_REDIRECTS):
            location = response.headers.get("Location")
            self._discard(response)
            if not location:
                raise BadResponse(f"{what}: redirect without a Location")
            target = urllib.parse.urljoin(current_url, location)
            target_host = _unambiguous_netloc(target)
            if target_host is None or "\\" in location or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in location):
                raise BadResponse(f"{what}: redirect to an unusable location")
            parts = urllib.parse.urlsplit(target)
            if parts.scheme == "http" and urllib.parse.urlsplit(current_url).scheme == "https":
                raise BadResponse(f"{what}: redirect from HTTPS to plain HTTP refused")
            target, target_host = self._checked_url(target, target_host, "redirect")
            headers = {"Accept": accept}
            if target_host == host:
                # Same host: the same credentials apply. Another host (a CDN) gets none.
                authorization = self._authorization(host, scope)
                if authorization:
                    headers["Authorization"] = authorization
            # Another host (a CDN) gets no credentials, but its connections are still filed under
            # the credential of the request that led there.
            response = self._send(target_host, target, headers, what, fingerprint)
            current_url = target
            if response.status_code not in (301, 302, 303, 307, 308):
                return response
        self._discard(response)
        raise BadResponse(f"{what}: more than {MAX_REDIRECTS} redirects")

    def _discard(self, response: Any) -> None:
        """Close a response whose body is not needed, reading a small body first (DRAIN_CAP).

        Read to its end, the body leaves the connection idle and urllib3 returns it to this host's
        pool (a pool is keyed by scheme, host and port, so the connection can only ever carry
        another request to the same endpoint, and headers such as Authorization are per request,
        never per connection). Each read waits at most the request's read timeout, which the
        Deadline already bounds, and no read starts after DRAIN_SECONDS, DRAIN_CAP bytes or the
        deadline: a registry answering 404 with an endless or dripping body costs its connection,
        not the check. Any failure while draining only means the connection is not reused.
        """
        try:
            headers = response.headers
            declared = headers.get("Content-Length")
            chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
            if declared is not None:
                worth_it = declared.strip().isdigit() and int(declared) <= DRAIN_CAP
            else:
                # Without a length and without chunking the body ends only when the server closes
                # the connection, which can never be reused.
                worth_it = chunked
            if worth_it:
                raw = response.raw
                read = getattr(raw, "read1", None) or raw.read
                started = time.monotonic()
                total = 0
                while (
                    total <= DRAIN_CAP
                    and time.monotonic() - started < DRAIN_SECONDS
                    and not self.deadline.expired()
                ):
                    chunk = read(CHUNK)
                    if not chunk:
                        break
                    total += len(chunk)
        except Exception:  # a broken or slow body: the connection is closed below, as before
            pass
        finally:
            # After a complete read urllib3 has already released the connection to the pool and
            # this only marks the response closed; otherwise it closes the connection.
            response.close()

    def _read_capped(self, response: Any, cap: int, what: str) -> bytes:
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            response.close()
            raise TooLarge(f"{what} is {int(declared)} bytes, more than the limit of {cap} bytes")
        raw = response.raw
        read = getattr(raw, "read1", None) or raw.read
        chunks: list[bytes] = []
        total = 0
        try:
            while True:
                if self.deadline.expired():
                    raise DeadlineExceeded(f"not verified within {self.deadline.seconds:g} s")
                chunk = read(CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > cap:
                    raise TooLarge(f"{what} is larger than the limit of {cap} bytes")
                chunks.append(chunk)
        except (DeadlineExceeded, TooLarge):
            raise
        except Exception as exc:
            if self.deadline.expired():
                raise DeadlineExceeded(f"not verified within {self.deadline.seconds:g} s") from None
            raise RegistryUnreachable(f"{what}: the connection failed while reading ({type(exc).__name__})") from None
        finally:
            response.close()
        return b"".join(chunks)

    # ---- authentication ---------------------------------------------------------------------

    def _credentials_for(self, host: str, scope: str | None) -> Credentials | None:
        """The credential in use for `scope` on `host`: the first candidate until a 401 moves on."""
        key = (host, scope or "")
        with self._lock:
            found = self._candidate_lists.get(key)
        if found is None:
            repository = ""
            if scope and scope.startswith("repository:") and scope.endswith(":pull"):
                repository = scope[len("repository:") : -len(":pull")]
            candidates = getattr(self.credentials, "candidates", None)
            if candidates is not None:
                found = tuple(candidates(host, repository))  # may raise (an unreadable pull secret)
            else:
                single = self.credentials.for_host(host)
                found = (single,) if single is not None else ()
            with self._lock:
                self._candidate_lists[key] = found
        with self._lock:
            index = self._chosen.get(key, 0)
        return found[index] if index < len(found) else None

    def _next_credentials(self, host: str, scope: str, failed: str | None = None) -> bool:
        """Move to the next credential for `scope` on `host`; False when none is left.

        `failed`: the fingerprint of the credential refused. When another thread has already moved
        past it, the current one is tried without moving again, so no candidate is skipped."""
        key = (host, scope)
        with self._lock:
            found = self._candidate_lists.get(key, ())
            index = self._chosen.get(key, 0)
            if failed is not None and index < len(found) and found[index].fingerprint != failed:
                return True
            if index + 1 >= len(found):
                return False
            self._chosen[key] = index + 1
            return True

    def _note(self) -> str:
        note = getattr(self.credentials, "note", None)
        return note() if note is not None else ""

    def _fingerprint(self, host: str, scope: str | None) -> str:
        credentials = self._credentials_for(host, scope)
        return credentials.fingerprint if credentials is not None else ""

    def _authorization(self, host: str, scope: str | None) -> str | None:
        credentials = self._credentials_for(host, scope)
        fingerprint = credentials.fingerprint if credentials is not None else ""
        key = (host, scope or "", fingerprint)
        with self._lock:
            token = self._tokens.get(key)
        if token is None:
            # One that an earlier admission obtained with this very credential, if it is still
            # valid for longer than this whole admission may take.
            token = self._pool.token(key, max(TOKEN_MARGIN_SECONDS, self.deadline.seconds))
            if token is not None:
                with self._lock:
                    self._tokens[key] = token
        if token is not None:
            return f"Bearer {token}"
        if credentials is not None and self._pool.is_basic(host, fingerprint):
            return _basic_header(credentials)
        return None

    def _authenticate_any(self, host: str, scope: str, challenge: str, what: str, stale: str | None = None) -> None:
        """Log in with the credential in use, and with each next one that the token service refuses."""
        while True:
            fingerprint = self._fingerprint(host, scope)
            try:
                self._authenticate(host, scope, challenge, what, stale)
                return
            except _CredentialsRefused:
                if not self._next_credentials(host, scope, failed=fingerprint):
                    raise

    def _authenticate(self, host: str, scope: str, challenge: str, what: str, stale: str | None = None) -> None:
        """Obtain what `challenge` asks for. `stale`: the Authorization header the refused request
        carried; a token that another thread obtained since then is used instead of a new one."""
        scheme, params = parse_challenge(challenge)
        credentials = self._credentials_for(host, scope)
        fingerprint = credentials.fingerprint if credentials is not None else ""
        if scheme == "basic":
            if credentials is None:
                raise RegistryAuthError(
                    f"{what}: {self.wording.server} requires a login and no credentials are configured for {host}{self._note()}"
                )
            self._pool.add_basic(host, fingerprint)
            return
        if scheme != "bearer" or not params.get("realm"):
            raise RegistryAuthError(f"{what}: {self.wording.server} asks for an unsupported authentication scheme")
        key = (host, scope, fingerprint)
        with self._lock:
            fetching = self._token_fetches.setdefault(key, threading.Lock())
        if not fetching.acquire(timeout=self.deadline.remaining()):
            raise DeadlineExceeded(f"not verified within {self.deadline.seconds:g} s")
        try:
            with self._lock:
                current = self._tokens.get(key)
            if current is not None and f"Bearer {current}" != stale:
                return  # obtained by another thread while this request was being refused
            sent_at = time.monotonic()
            token, lifetime = self._fetch_token(host, params, scope, credentials, what)
            with self._lock:
                self._tokens[key] = token
            # Counted from before the request went out, so never later than the token service meant.
            self._pool.add_token(key, token, sent_at + lifetime)
        finally:
            fetching.release()

    def _fetch_token(
        self, host: str, params: dict[str, str], scope: str, credentials: Credentials | None, what: str
    ) -> tuple[str, float]:
        """A token from the token service and its lifetime in seconds (`expires_in`)."""
        realm_host = _unambiguous_netloc(params["realm"])
        if realm_host is None:
            raise RegistryAuthError(f"{what}: {self.wording.server} names an unusable token service")
        realm_url, realm_host = self._checked_url(params["realm"], realm_host, "token")
        realm = urllib.parse.urlsplit(realm_url)
        query = {"scope": scope}
        if params.get("service"):
            query["service"] = params["service"]
        url = urllib.parse.urlunsplit(
            (realm.scheme, realm.netloc, realm.path, urllib.parse.urlencode(query), "")
        )
        headers = {"Accept": "application/json"}
        # Credentials go to the token service this registry names, but never in clear text to a
        # host other than the registry itself.
        withheld = credentials is not None and not (realm.scheme == "https" or realm_host == host)
        if credentials is not None and not withheld:
            headers["Authorization"] = _basic_header(credentials)
        fingerprint = credentials.fingerprint if credentials is not None else ""
        response = self._send(realm_host, url, headers, f"token for {what}", fingerprint)
        if response.status_code in (401, 403) and withheld:
            # "refused the credentials" would send the reader checking a password that was never sent.
            self._discard(response)
            raise RegistryAuthError(
                f"{what}: the token service {realm_host} answered {response.status_code}; the credentials for "
                f"{host} were not sent to it because it is plain HTTP on another host (it must use HTTPS)"
            )
        if response.status_code in (401, 403):
            self._discard(response)
            raise _CredentialsRefused(f"{what}: the token service refused the credentials ({response.status_code}){self._note()}")
        if response.status_code != 200:
            self._discard(response)
            raise RegistryAuthError(f"{what}: the token service answered HTTP {response.status_code}")
        body = self._read_capped(response, MAX_TOKEN_BYTES, f"token for {what}")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise RegistryAuthError(f"{what}: the token service sent invalid JSON") from None
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(token, str) or not token:
            raise RegistryAuthError(f"{what}: the token service sent no usable token")
        if not all("\x21" <= ch <= "\x7e" for ch in token):
            # A bearer token is visible ASCII (RFC 6750). Anything else would fail deep in
            # http.client (UnicodeEncodeError) or reach the registry altered. The message names
            # the registry, never the token.
            raise RegistryAuthError(
                f"{what}: the token service sent no usable token for {host}: it holds characters other than "
                "visible ASCII, which an HTTP header cannot carry"
            )
        return token, _token_lifetime(data)


class _CredentialsRefused(RegistryAuthError):
    """The token service refused a credential: the next matching one may still be accepted."""


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Parse `Bearer realm="...",service="...",scope="..."` into ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params: dict[str, str] = {}
    for key, value in _challenge_params(rest):
        params[key.lower()] = value
    return scheme.lower(), params


def _challenge_params(text: str) -> Iterator[tuple[str, str]]:
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " ,":
            i += 1
        start = i
        while i < n and text[i] not in "= ,":
            i += 1
        key = text[start:i]
        if i >= n or text[i] != "=":
            continue
        i += 1
        if i < n and text[i] == '"':
            i += 1
            value = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            i += 1
            yield key, "".join(value)
        else:
            start = i
            while i < n and text[i] != ",":
                i += 1
            yield key, text[start:i].strip()


# ---- warm connections and tokens across admissions (the verifier service) ----------------------

# A token from the pool serves a new admission only while it stays valid for longer than that
# admission may take (its deadline), and never for less than this.
TOKEN_MARGIN_SECONDS = 10.0
# The distribution token spec: "When omitted, this defaults to 60 seconds".
DEFAULT_TOKEN_SECONDS = 60.0
# Registries keep idle connections for a minute or so; a Session idle for longer holds only
# connections the registry has probably closed, and descriptors.
SESSION_IDLE_SECONDS = 90.0
MAX_SESSIONS = 64
MAX_TOKENS = 1024
MAX_BASIC_HOSTS = 256


@dataclass
class _PooledSession:
    session: Any
    context: Any  # kept alive: the key holds its id()
    generation: int
    last_used: float


class WarmPool:
    """Sessions (with their keep-alive connections), bearer tokens and Basic hosts.

    Sessions are keyed by (canonical host, TLS trust, credential fingerprint) and tokens by (host,
    scope, credential fingerprint): nothing obtained or opened for one credential is ever handed
    to a request made with another. A token is kept only until its `expires_in` (counted from
    before it was requested) less a margin. Nothing here says anything about an image: verdicts
    and tag resolutions live in the on-disk cache alone, under its own rules (tagTtlSeconds).

    Each RegistryClient has its own pool unless enable_warm_pool() made this process's pool shared:
    the verifier service's long-lived workers do, so that an admission finds the connections and
    tokens of the previous ones. A hook process, one admission long, never does.
    """

    def __init__(self, shared: bool) -> None:
        self.shared = shared
        self.generation = 0  # one per admission (new_admission): older sessions are warm
        self._lock = threading.Lock()
        self._sessions: dict[tuple[str, int, str], _PooledSession] = {}
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._basic: dict[tuple[str, str], None] = {}

    def session(self, key: tuple[str, int, str], context: Any, factory: Callable[[], Any]) -> tuple[Any, bool]:
        now = time.monotonic()
        with self._lock:
            entry = self._sessions.pop(key, None)  # re-inserted last: the dict's order is LRU
            if entry is None:
                entry = _PooledSession(factory(), context, self.generation, now)
            entry.last_used = now
            self._sessions[key] = entry
            evicted = []
            while len(self._sessions) > MAX_SESSIONS:
                oldest = next(iter(self._sessions))
                evicted.append(self._sessions.pop(oldest).session)
        for session in evicted:
            session.close()
        return entry.session, entry.generation != self.generation

    def discard_connections(self, session: Any) -> None:
        """Close the idle connections of `session` (it stays usable and opens new ones)."""
        session.close()

    def token(self, key: tuple[str, str, str], margin: float) -> str | None:
        with self._lock:
            found = self._tokens.get(key)
            if found is None:
                return None
            token, expires_at = found
            if time.monotonic() + margin >= expires_at:
                if time.monotonic() >= expires_at:
                    del self._tokens[key]
                return None
            return token

    def add_token(self, key: tuple[str, str, str], token: str, expires_at: float) -> None:
        with self._lock:
            self._tokens.pop(key, None)
            self._tokens[key] = (token, expires_at)
            if len(self._tokens) > MAX_TOKENS:
                self._drop_expired_tokens(time.monotonic())
            while len(self._tokens) > MAX_TOKENS:
                del self._tokens[next(iter(self._tokens))]

    def is_basic(self, host: str, fingerprint: str) -> bool:
        with self._lock:
            return (host, fingerprint) in self._basic

    def add_basic(self, host: str, fingerprint: str) -> None:
        with self._lock:
            self._basic[(host, fingerprint)] = None
            while len(self._basic) > MAX_BASIC_HOSTS:
                del self._basic[next(iter(self._basic))]

    def new_admission(self) -> None:
        """Between two admissions: forget expired tokens, close Sessions idle for too long."""
        now = time.monotonic()
        with self._lock:
            self.generation += 1
            self._drop_expired_tokens(now)
            idle = [key for key, entry in self._sessions.items() if now - entry.last_used > SESSION_IDLE_SECONDS]
            closing = [self._sessions.pop(key).session for key in idle]
        for session in closing:
            session.close()

    def counts(self) -> dict[str, int]:
        with self._lock:
            return {"sessions": len(self._sessions), "tokens": len(self._tokens)}

    def close(self) -> None:
        with self._lock:
            sessions = [entry.session for entry in self._sessions.values()]
            self._sessions.clear()
            self._tokens.clear()
            self._basic.clear()
        for session in sessions:
            session.close()

    def _drop_expired_tokens(self, now: float) -> None:
        for key in [key for key, (_, expires_at) in self._tokens.items() if now >= expires_at]:
            del self._tokens[key]


_WARM_POOL: WarmPool | None = None


def enable_warm_pool() -> WarmPool:
    """Keep connections and tokens across the RegistryClients of this process (the verifier
    service's long-lived worker calls this once; see WarmPool)."""
    global _WARM_POOL
    if _WARM_POOL is None:
        _WARM_POOL = WarmPool(shared=True)
    return _WARM_POOL


def warm_pool() -> WarmPool | None:
    return _WARM_POOL


def _token_lifetime(data: Any) -> float:
    """`expires_in` of a token answer in seconds; the spec's 60 when absent or unusable."""
    value = data.get("expires_in") if isinstance(data, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 10**7:
        return DEFAULT_TOKEN_SECONDS
    return float(value)


_TLS_CONTEXTS: dict[str | None, tuple[Any, Any]] = {}
_TLS_CONTEXTS_LOCK = threading.Lock()


def _reset_tls_lock_in_child() -> None:
    # The verifier service forks workers; a fork taken while another thread held this lock would
    # leave the worker's copy locked forever. The contexts themselves are safe to inherit.
    global _TLS_CONTEXTS_LOCK
    _TLS_CONTEXTS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_tls_lock_in_child)


def shared_tls_context(ca_bundle: str | None, setting: str = REGISTRY_WORDING.ca_setting) -> Any:
    """The client TLS context for `ca_bundle` (None: none configured), built once per process.

    Left to itself, requests hands urllib3 the path of certifi's bundle for every connection, and
    urllib3 loads that file (about 150 certificates) into the SSL context of each new connection:
    20-30 ms of CPU per TCP+TLS set-up, measured (issue 18). Loaded once, the same certificates
    serve every connection. The trust is what it was: certifi's bundle (requests' default), plus
    registries.caBundle when set. The bundle is reloaded when its content changes (a mounted Secret
    or ConfigMap is replaced), since the verifier service outlives a rotation.
    """
    import ssl

    import certifi

    version = None
    if ca_bundle is not None:
        # Keyed by content, not by mtime: a rewrite within one clock tick keeps the mtime. The file
        # is a few kilobytes; hashing it costs microseconds, parsing it was the expense.
        try:
            with open(ca_bundle, "rb") as handle:
                version = hashlib.sha256(handle.read()).digest()
        except OSError as exc:
            raise RegistryError(f"cannot load {setting} {ca_bundle}: {exc.strerror or exc}") from None
    with _TLS_CONTEXTS_LOCK:
        cached = _TLS_CONTEXTS.get(ca_bundle)
        if cached is not None and cached[0] == version:
            return cached[1]
        if ca_bundle is None:
            # What urllib3 builds for requests' verify=True, minus the per-connection reload.
            from urllib3.util.ssl_ import create_urllib3_context

            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
            context.load_verify_locations(cafile=certifi.where())
        else:
            # `verify=<file>` in requests would replace the default trust store, so a bundle added
            # for a private registry would break HTTPS to every public one: both are loaded.
            context = ssl.create_default_context(cafile=certifi.where())
            try:
                context.load_verify_locations(cafile=ca_bundle)
            except (OSError, ssl.SSLError) as exc:
                raise RegistryError(f"cannot load {setting} {ca_bundle}: {exc}") from None
        _TLS_CONTEXTS[ca_bundle] = (version, context)
        return context


def _adapter_with_context(requests: Any, context: Any) -> Any:
    """An HTTPS adapter whose connections all use `context` (shared_tls_context)."""

    class SharedContextAdapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> Any:
            kwargs["ssl_context"] = context
            return super().init_poolmanager(*args, **kwargs)

        def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
            kwargs["ssl_context"] = context
            return super().proxy_manager_for(*args, **kwargs)

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            super().cert_verify(conn, url, verify, cert)
            if url.lower().startswith("https") and verify is True:
                # requests sets certifi's path here, which urllib3 would load into the shared
                # context again on every connection; the context already holds it (and the
                # caBundle). Certificates stay required: cert_reqs is left as requests set it.
                conn.ca_certs = None
                conn.ca_cert_dir = None

    return SharedContextAdapter(pool_maxsize=POOL_CONNECTIONS)


def _unambiguous_netloc(url: str) -> str | None:
    """`host[:port]` (lower case) of an absolute http(s) URL, or None when parsers may disagree on it.

    The host policy judges the host that urllib.parse reads, but the connection goes to the host
    that urllib3 reads, and for crafted URLs they differ: `http://169.254.169.254\\@registry/` is
    `registry` to urllib.parse and 169.254.169.254 to urllib3, and urllib3 percent-decodes
    `http://%31%36%39.254.169.254/`. So URLs with user info, percent signs in the host part,
    backslashes, white space or control characters are refused, and both parsers must agree.
    """
    if "\\" in url or any(ord(ch) < 0x21 or ord(ch) == 0x7F for ch in url):
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    netloc = parts.netloc
    if "@" in netloc or "%" in netloc or not netloc.isascii():
        return None
    try:
        from urllib3.util import parse_url

        connects_to = (parse_url(url).host or "").lower()
    except Exception:  # urllib3's LocationParseError: requests would refuse the URL too
        return None
    if connects_to.strip("[]") != parts.hostname:
        return None
    return netloc.lower()


def _next_link(header: str | None, host: str, scheme: str) -> str | None:
    """The path of the `rel="next"` page of a `Link` header, if it stays on the same registry."""
    if not header:
        return None
    for part in header.split(","):
        target, _, params = part.partition(";")
        if 'rel="next"' not in params.replace(" ", "") and "rel=next" not in params.replace(" ", ""):
            continue
        url = target.strip().lstrip("<").rstrip(">")
        parts = urllib.parse.urlsplit(url)
        if parts.netloc and (parts.netloc.lower() != host.lower() or parts.scheme != scheme):
            return None  # pagination never leads to another host
        if not parts.path.startswith("/v2/"):
            return None
        return parts.path + (f"?{parts.query}" if parts.query else "")
    return None


def _basic_header(credentials: Credentials) -> str:
    import base64

    token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
    return f"Basic {token}"


def _retry_after(value: str | None, attempt: int) -> float:
    """Seconds to wait before the next attempt: the registry's Retry-After, else our backoff."""
    asked = _parse_retry_after(value)
    return 0.2 * (2 ** (attempt - 1)) if asked is None else asked


def _parse_retry_after(value: str | None) -> float | None:
    """A Retry-After header (delay-seconds or HTTP-date) in seconds; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    import email.utils

    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and everything it wraps: requests wraps urllib3, which wraps ssl and socket
    errors in `__cause__`, `reason` or `args`. Classifying by these types and codes, not by the
    words of a message, keeps the explanations right across library versions."""
    found: list[BaseException] = []
    pending: list[BaseException] = [exc]
    while pending and len(found) < 32:
        current = pending.pop(0)
        if any(current is seen for seen in found):
            continue
        found.append(current)
        reason = getattr(current, "reason", None)
        for inner in (current.__cause__, current.__context__, reason, *current.args):
            if isinstance(inner, BaseException):
                pending.append(inner)
    return found


# OpenSSL's X509_V_ERR_* codes (ssl.SSLCertVerificationError.verify_code) that get their own words.
_UNKNOWN_AUTHORITY = {2, 18, 19, 20}  # unable to get issuer (locally), self-signed leaf, self-signed in chain
_NAME_MISMATCH = {62, 64}  # hostname mismatch, IP address mismatch
_EXPIRED = {10}


def _tls_problem(exc: Exception, wording: Wording = REGISTRY_WORDING) -> str:
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLCertVerificationError):
            code = cause.verify_code
            if code in _UNKNOWN_AUTHORITY:
                return f"certificate signed by an unknown authority; set {wording.ca_setting}"
            if code in _NAME_MISMATCH:
                return "the certificate does not match the host name"
            if code in _EXPIRED:
                return "the certificate has expired"
            return "certificate verification failed"
        if isinstance(cause, ssl.SSLError) and cause.reason == "WRONG_VERSION_NUMBER":
            return f"{wording.server} does not speak TLS; list it under registries.insecure if it is plain HTTP"
    return "TLS handshake failed"


def _connection_problem(exc: Exception, wording: Wording = REGISTRY_WORDING) -> str:
    for cause in _causes(exc):
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        if isinstance(cause, ConnectionResetError):
            return "connection reset"
        if isinstance(cause, http.client.RemoteDisconnected):
            return f"{wording.server} closed the connection"
        if isinstance(cause, OSError) and cause.errno == errno.ENETUNREACH:
            return "network unreachable"
        if isinstance(cause, OSError) and cause.errno == errno.EHOSTUNREACH:
            return "no route to host"
    return "connection failed"
