"""The fetcher's side of the registry client: Notary wording, error kinds, a client sharing the
image client's credentials and host policy. Nothing is sent: the client's transport is stubbed or
its message builders are called directly."""

from __future__ import annotations

import http.client
import ssl

from typing import Any, Callable

import pytest
import requests

from signgate.deadline import Deadline
from signgate.errors import (
    BadResponse,
    DeadlineExceeded,
    HostNotAllowed,
    NotFound,
    RegistryAuthError,
    RegistryError,
    RegistryRateLimited,
    RegistryUnreachable,
    TooLarge,
)
from signgate.registry import RegistryClient
from signgate.settings import Limits, RegistrySettings
from signgate.verifiers.notaryv1.errors import NotaryAuthError, NotaryError, NotaryTooLarge, NotaryUnreachable
from signgate.verifiers.notaryv1.transport import NotaryFetcher, notary_wording

SERVER = "https://notary.example:4443"
HOST = "notary.example:4443"


def fetcher(**kwargs: Any) -> NotaryFetcher:
    return NotaryFetcher(SERVER + "/", "registry.example/app", deadline=Deadline(5), limits=Limits(), **kwargs)


def test_the_fetcher_reads_the_server_url_canonically() -> None:
    fetch = fetcher()
    assert (fetch.server, fetch.host) == (SERVER, HOST)
    assert NotaryFetcher("http://NOTARY.example:80", "g", deadline=Deadline(5), limits=Limits()).host == "notary.example"
    with pytest.raises(NotaryError, match="^Notary server 'ftp://notary.example' is not an http\\(s\\) URL$"):
        NotaryFetcher("ftp://notary.example", "g", deadline=Deadline(5), limits=Limits())


def test_the_fetcher_asks_for_the_role_file_of_the_gun() -> None:
    fetch = NotaryFetcher(SERVER, "registry.example:5000/team/app", deadline=Deadline(5), limits=Limits())
    calls: list[tuple[Any, ...]] = []

    def get_bytes(host: str, repository: str, path: str, *, accept: str, what: str, max_bytes: int) -> bytes:
        calls.append((host, repository, path, accept, what, max_bytes))
        return b"{}"

    fetch.http.get_bytes = get_bytes  # type: ignore[method-assign]
    assert fetch("targets/releases", 1234) == b"{}"
    assert calls == [(
        HOST, "registry.example:5000/team/app", "/v2/registry.example:5000/team/app/_trust/tuf/targets/releases.json",
        "application/json", f"targets/releases.json of registry.example:5000/team/app from Notary server {SERVER}", 1234,
    )]


@pytest.mark.parametrize(
    ("raised", "expected", "reason"),
    [
        (RegistryUnreachable("u", log_detail="the cause"), NotaryUnreachable, "notary-unreachable"),
        (RegistryAuthError("a"), NotaryAuthError, "notary-auth"),
        (TooLarge("t"), NotaryTooLarge, "notary-too-large"),
        (RegistryRateLimited("r"), NotaryError, "notary-error"),
        (BadResponse("b"), NotaryError, "notary-error"),
        (HostNotAllowed("h"), NotaryError, "notary-error"),
        (RegistryError("e"), NotaryError, "notary-error"),
    ],
)
def test_transport_errors_become_the_notary_error_of_their_kind(raised: RegistryError, expected: type, reason: str) -> None:
    fetch = fetcher()

    def get_bytes(*args: Any, **kwargs: Any) -> bytes:
        raise raised

    fetch.http.get_bytes = get_bytes  # type: ignore[method-assign]
    with pytest.raises(NotaryError) as caught:
        fetch("root", 10)
    assert type(caught.value) is expected and caught.value.reason == reason
    assert caught.value.message == raised.message and caught.value.log_detail == raised.log_detail


def test_a_missing_file_is_none_and_the_deadline_passes_through() -> None:
    fetch = fetcher()
    for raised, outcome in ((NotFound("n"), None), (DeadlineExceeded("d"), DeadlineExceeded)):
        def get_bytes(*args: Any, raised: Exception = raised, **kwargs: Any) -> bytes:
            raise raised

        fetch.http.get_bytes = get_bytes  # type: ignore[method-assign]
        if outcome is None:
            assert fetch("root", 10) is None
        else:
            with pytest.raises(DeadlineExceeded):
                fetch("root", 10)


def test_with_an_image_client_the_fetcher_shares_its_credentials_policy_and_request_log() -> None:
    def allowed(host: str, scheme: str, role: str) -> str | None:
        return None

    def named(host: str, scheme: str) -> bool:
        return True

    image_client = RegistryClient(RegistrySettings(), Limits(), Deadline(5), host_allowed=allowed, host_named=named)
    fetch = fetcher(ca_bundle=None, client=image_client)
    assert fetch.http is not image_client
    assert fetch.http.credentials is image_client.credentials and fetch.http.records is image_client.records
    assert fetch.http.host_allowed is allowed and fetch.http.host_named is named
    assert fetch.http.deadline is image_client.deadline and fetch.http.limits is image_client.limits
    assert fetch.http.wording == notary_wording(SERVER, HOST)
    assert fetch.http.settings.insecure == frozenset()  # https: nothing plain
    assert NotaryFetcher("http://notary.example:4443", "g", deadline=Deadline(5), limits=Limits()).http.settings.insecure == {HOST}


# ---- the messages: what the fetcher used to rewrite, now worded so by the client ---------------


def rewritten(text: str) -> str:
    """The str.replace rewriting the fetcher did before the client took a Wording: the oracle."""
    text = text.replace(f"registry {HOST}", f"Notary server {SERVER}")
    text = text.replace("registries.caBundle", "the rule's notary.caBundle")
    return text.replace("the registry", "the Notary server")


def _clients() -> tuple[RegistryClient, RegistryClient]:
    registry = RegistryClient(RegistrySettings(), Limits(), Deadline(5))
    return registry, registry.for_server(RegistrySettings(), notary_wording(SERVER, HOST))


def _wrapped(outer: type[Exception], inner: BaseException) -> Exception:
    """A requests error wrapping a low-level one, as requests raises them (`args[0]`): the client
    classifies failures by the wrapped exception's type and codes (registry._causes)."""
    return outer(inner)


def _tls(code: int) -> ssl.SSLCertVerificationError:
    error = ssl.SSLCertVerificationError(1, "certificate verify failed")
    error.verify_code = code
    return error


def _not_tls() -> ssl.SSLError:
    error = ssl.SSLError(1, "wrong version number")
    error.reason = "WRONG_VERSION_NUMBER"
    return error


MESSAGES: dict[str, Callable[[RegistryClient], Any]] = {
    "rate-limited": lambda c: c._status_error(429, "w", 3),
    "5xx": lambda c: c._status_error(503, "w", 3),
    "cannot wait 429": lambda c: c._cannot_wait_error(429, "w", 1, 60.0, 1.0),
    "cannot wait 5xx": lambda c: c._cannot_wait_error(503, "w", 1, 60.0, 1.0),
    "refused": lambda c: c._transport_error(_wrapped(requests.exceptions.ConnectionError, ConnectionRefusedError(111, "Connection refused")), HOST, "w"),
    "closed": lambda c: c._transport_error(_wrapped(requests.exceptions.ConnectionError, http.client.RemoteDisconnected("x")), HOST, "w"),
    "redirect host": lambda c: c._transport_error(_wrapped(requests.exceptions.ConnectionError, ConnectionRefusedError(111, "Connection refused")), "cdn.example", "w"),
    "timeout": lambda c: c._transport_error(requests.exceptions.ConnectTimeout("t"), HOST, "w"),
    "slow": lambda c: c._transport_error(requests.exceptions.ReadTimeout("t"), HOST, "w"),
    "other": lambda c: c._transport_error(requests.exceptions.InvalidURL("t"), HOST, "w"),
    "unknown CA": lambda c: c._transport_error(_wrapped(requests.exceptions.SSLError, _tls(20)), HOST, "w"),
    "plain HTTP": lambda c: c._transport_error(_wrapped(requests.exceptions.SSLError, _not_tls()), HOST, "w"),
    "no login": lambda c: c._authenticate(HOST, "s", 'Basic realm="x"', "w"),
    "odd scheme": lambda c: c._authenticate(HOST, "s", "Negotiate", "w"),
    "bad token service": lambda c: c._fetch_token(HOST, {"realm": "not a url"}, "s", None, "w"),
}


@pytest.mark.parametrize("case", sorted(MESSAGES))
def test_notary_messages_are_what_the_rewriting_made_of_the_registry_messages(case: str) -> None:
    registry, notary = _clients()
    produced = []
    for client in (registry, notary):
        try:
            error = MESSAGES[case](client)
        except RegistryError as exc:
            error = exc
        produced.append(str(error))
    assert produced[1] == rewritten(produced[0])
    assert produced[0] != produced[1] or case == "redirect host"  # the wording did change something


def test_the_ca_bundle_setting_is_named_in_load_errors(tmp_path: Any) -> None:
    missing = str(tmp_path / "none.pem")
    registry = RegistryClient(RegistrySettings(), Limits(), Deadline(5))
    notary = registry.for_server(RegistrySettings(ca_bundle=missing), notary_wording(SERVER, HOST))
    with pytest.raises(RegistryError, match=f"^cannot load the rule's notary.caBundle {missing}: No such file or directory$"):
        notary._session(HOST, "")
