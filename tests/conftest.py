"""Shared fixtures: real registries on 127.0.0.1, signing keys and test-side registry clients.

Used by tests/integration, tests/e2e and tests/interop. The test support (registries, bcrypt for
htpasswd, the signer) is imported inside the fixtures, not here: tests/unit must run with
requirements.txt, pytest and hypothesis only, and this file is loaded for them too.
"""

from __future__ import annotations

import itertools
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# The hook ships its library under hooks/lib; tests import it the way the hook's runtime does.
sys.path.insert(0, str(REPO_ROOT / "hooks" / "lib"))
# `tests` is not a package, so make `support` importable for test modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))

if TYPE_CHECKING:
    from support.oci import RegistryHTTP
    from support.registry import Mode, Registry
    from support.signer import TestKey

NO_REGISTRY_REASON = (
    "docker-registry (Debian package docker-registry, distribution 2.8) is not on PATH; "
    "registry-backed tests need it (CI installs it)"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes more than a second or so; deselect with -m 'not slow'")


def _require_registry_binary() -> None:
    from support.registry import registry_binary

    if registry_binary() is None:
        pytest.skip(NO_REGISTRY_REASON)


@pytest.fixture(scope="session")
def _storage_root() -> Iterator[Path | None]:
    """Session-wide tmpfs directory for registry blob storage (None → keep it in tmp_path)."""
    from support.registry import fast_storage_root

    base = fast_storage_root()
    if base is None:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="signgate-registries-", dir=base))
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _new_registry(factory: pytest.TempPathFactory, storage_root: Path | None,
                  mode: Mode) -> Registry:
    from support.registry import Registry

    _require_registry_binary()
    directory = factory.mktemp(f"registry-{mode}")
    data_dir = Path(tempfile.mkdtemp(dir=storage_root)) if storage_root else None
    return Registry(directory, mode, data_dir=data_dir)


# -- registries ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory,
             _storage_root: Path | None) -> Iterator[Registry]:
    """Shared plain-HTTP registry without auth. Use unique repository names (``repo`` fixture)."""
    reg = _new_registry(tmp_path_factory, _storage_root, "plain").start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory,
                 _storage_root: Path | None) -> Iterator[Registry]:
    """Shared HTTPS registry with its own CA (``ca_path``) and htpasswd user tester/s3cret."""
    reg = _new_registry(tmp_path_factory, _storage_root, "tls_htpasswd").start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory,
                   _storage_root: Path | None) -> Iterator[Registry]:
    """Shared token-auth registry: tester/s3cret may push, anonymous may pull. The token server
    is ``token_registry.token_server`` (its ``requests`` list is shared: filter or clear it)."""
    reg = _new_registry(tmp_path_factory, _storage_root, "token").start()
    yield reg
    reg.stop()


@pytest.fixture
def fresh_registry(tmp_path_factory: pytest.TempPathFactory,
                   _storage_root: Path | None) -> Iterator[Callable[..., Registry]]:
    """Factory for private registries that a test may stop, restart or break:
    ``reg = fresh_registry()`` or ``fresh_registry("token")``. All are stopped at teardown."""
    _require_registry_binary()
    made: list[Registry] = []

    def make(mode: Mode = "plain") -> Registry:
        reg = _new_registry(tmp_path_factory, _storage_root, mode)
        made.append(reg)
        return reg.start()

    yield make
    for reg in made:
        reg.stop()
        if _storage_root is not None and _storage_root in reg.data_dir.parents:
            shutil.rmtree(reg.data_dir, ignore_errors=True)  # tmpfs is RAM


# -- clients -------------------------------------------------------------------------------------


@pytest.fixture
def http_for() -> Iterator[Callable[..., RegistryHTTP]]:
    """``http_for(registry, **kwargs)`` → a RegistryHTTP with the registry's credentials and CA
    (``anonymous=True``, ``password=...`` etc. to deviate). Sessions are closed at teardown."""
    from support.oci import RegistryHTTP

    clients: list[RegistryHTTP] = []

    def make(reg: Registry, **kwargs: object) -> RegistryHTTP:
        client = RegistryHTTP(reg, **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def http(registry: Registry, http_for: Callable[..., RegistryHTTP]) -> RegistryHTTP:
    """Client for the shared plain registry."""
    return http_for(registry)


_repo_counter = itertools.count()


@pytest.fixture
def repo(request: pytest.FixtureRequest) -> str:
    """A repository name unique to this test, valid under the distribution name grammar."""
    name = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:60] or "test"
    return f"t/{name}-{next(_repo_counter)}"


# -- keys ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, TestKey]:
    """One key of every kind (``keys["ecdsa-p256"]`` …) plus ``keys["other-ecdsa-p256"]``, an
    unrelated key of the same type for wrong-key cases. RSA also has a PKCS#1 PEM."""
    from support.signer import KEY_KINDS, generate_key

    directory = tmp_path_factory.mktemp("keys")
    made = {kind: generate_key(kind, directory, rsa_pkcs1_pem=kind.startswith("rsa"))
            for kind in KEY_KINDS}
    made["other-ecdsa-p256"] = generate_key("ecdsa-p256", directory, "other-ecdsa-p256")
    return made
