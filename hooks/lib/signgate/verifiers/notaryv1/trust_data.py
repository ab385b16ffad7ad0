"""The verified trust data of one GUN (`<registry>/<repository>`, e.g. `docker.io/library/nginx`).

Pure: every file comes through a `Fetch` function (transport.NotaryFetcher in production), so the
whole chain can be checked over bytes and a clock. No state is kept between runs: there is no
rollback protection beyond what the pinned root and the expiry dates give (each hook process
starts fresh).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from .errors import InvalidMetadata, NoTrustData
from .roles import Targets, verify_root, verify_snapshot, verify_targets, verify_timestamp

if TYPE_CHECKING:
    from ...keys import PublicKey

MAX_TIMESTAMP_BYTES = 64 * 1024  # timestamp.json is the only file fetched with no length known from above
MAX_ROLES = 32  # delegation files fetched for one image

Fetch = Callable[[str, int], "bytes | None"]  # (role, max bytes) -> the file, None when the server has none


class TrustCollection:
    """The verified trust data of one GUN. Pure: all I/O goes through `fetch`.

    The top-level files are fetched and verified on creation, delegation files when first asked
    for. Every file is checked against the hashes and length a verified file lists for it before
    it is parsed, and fetched with that length as its cap.
    """

    def __init__(
        self,
        gun: str,
        fetch: Fetch,
        pinned: Sequence[PublicKey],
        now: datetime,
        *,
        max_bytes: int,
        max_roles: int = MAX_ROLES,
    ) -> None:
        self.gun, self.fetch, self.now, self.max_bytes, self.max_roles = gun, fetch, now, max_bytes, max_roles
        raw_root = fetch("root", max_bytes)
        if raw_root is None:
            raise NoTrustData(f"the Notary server has no trust data for {gun}")
        self.root = verify_root(raw_root, gun, pinned, now)
        raw_timestamp = self._required("timestamp", MAX_TIMESTAMP_BYTES)
        self.timestamp = verify_timestamp(raw_timestamp, self.root, now)
        raw_snapshot = self._required("snapshot", self._listed_length(self.timestamp.signed["meta"]["snapshot"], "snapshot"))
        self.snapshot = verify_snapshot(raw_snapshot, self.root, self.timestamp, now)
        listed = self.snapshot.signed["meta"]["targets"]
        raw_targets = self._required("targets", self._listed_length(listed, "targets"))
        self.targets = verify_targets(raw_targets, self.root.roles["targets"], listed, self.snapshot, now)
        self._roles: dict[str, Targets] = {"targets": self.targets}
        self._absent: dict[str, str] = {}

    def _required(self, role: str, max_bytes: int) -> bytes:
        raw = self.fetch(role, max_bytes)
        if raw is None:
            raise InvalidMetadata(f"the Notary server has root.json but no {role}.json for {self.gun}")
        return raw

    def _listed_length(self, entry: Any, role: str) -> int:
        length = entry.get("length") if isinstance(entry, dict) else None
        if not isinstance(length, int) or isinstance(length, bool) or length < 0:
            raise InvalidMetadata(f"no valid length is listed for {role}.json of {self.gun}")
        if length > self.max_bytes:
            raise InvalidMetadata(f"{role}.json of {self.gun} is listed as {length} bytes, over the limit of {self.max_bytes}")
        return length

    def role(self, name: str) -> Targets | None:
        """A verified targets role, or None (then `why_absent(name)` says why)."""
        if name in self._roles:
            return self._roles[name]
        if name in self._absent or not name.startswith("targets/"):
            self._absent.setdefault(name, f"{name} is not a delegation role")
            return None
        parent_name = name.rpartition("/")[0]
        parent = self.role(parent_name)
        if parent is None:
            self._absent[name] = self._absent[parent_name]
            return None
        role = next((r for r in parent.delegations if r.name == name), None)
        if role is None:
            self._absent[name] = f"{parent_name} delegates no role {name}"
            return None
        listed = self.snapshot.signed["meta"].get(name)
        if listed is None:  # delegated, but nothing was ever signed into it
            self._absent[name] = f"{name} has no trust data (the snapshot lists no {name}.json)"
            return None
        if len(self._roles) >= self.max_roles:
            raise InvalidMetadata(f"the trust data of {self.gun} needs more than {self.max_roles} delegation files")
        raw = self.fetch(name, self._listed_length(listed, name))
        if raw is None:
            raise InvalidMetadata(f"snapshot.json of {self.gun} lists {name}.json, but the Notary server has none")
        targets = verify_targets(raw, role, listed, self.snapshot, self.now)
        self._roles[name] = targets
        return targets

    def why_absent(self, name: str) -> str:
        return self._absent.get(name, f"{name} has no trust data")

    def walk(self, start: str, target: str | None = None) -> Iterator[Targets]:
        """`start` and its delegations, depth first in listed order (Notary's WalkTargets).

        With `target`, subtrees whose paths cannot hold that target are skipped.
        """
        top = self.role(start)
        if top is None or (target is not None and not top.role.allows(target)):
            return
        yield top
        for child in top.delegations:
            if target is None or child.allows(target):
                yield from self.walk(child.name, target)
