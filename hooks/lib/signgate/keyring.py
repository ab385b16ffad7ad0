"""The public keys of one request, loaded on first use and shared by its verifier threads."""

from __future__ import annotations

import threading
from typing import Mapping, Sequence

from .errors import KeyLoadError
from .keys import PublicKey, load_public_key
from .verifiers.cosign.rekor import RekorKeys
from .settings import KeySpec


class KeyRing:
    """Public keys loaded on first use and shared by the threads of one request."""

    def __init__(self, specs: Mapping[str, KeySpec], rekor_specs: Mapping[str, KeySpec] | None = None) -> None:
        self._specs = specs
        self._rekor_specs = rekor_specs or {}
        self._loaded: dict[str, PublicKey] = {}
        self._rekor: RekorKeys | None = None
        self._lock = threading.Lock()

    def get(self, names: Sequence[str]) -> list[PublicKey]:
        with self._lock:
            for name in names:
                if name not in self._loaded:
                    self._loaded[name] = load_public_key(self._specs[name])
            return [self._loaded[name] for name in names]

    def rekor(self) -> RekorKeys:
        with self._lock:
            if self._rekor is None:
                try:
                    keys = [load_public_key(spec) for spec in self._rekor_specs.values()]
                except KeyLoadError as exc:
                    raise KeyLoadError(f"Rekor {exc}") from None
                self._rekor = RekorKeys.of(keys)
            return self._rekor
