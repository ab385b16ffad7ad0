"""Whether verified trust data vouches for the manifest the registry serves.

For a tag: the target named after the tag, looked up as the Docker client does (the
`targets/releases` subtree first, then the whole `targets` tree, each in pre-order), must have the
sha256 and length of the manifest the registry serves for that tag. For a digest reference (what
the kubelet pulls when one is given): some signed target must carry that digest and length. With
`delegations` in the rule, every listed role must itself have signed the target, and only those
roles are consulted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence, TypeVar

from .errors import DelegationMissing, NoTrustData, NotaryError, TargetMismatch
from .roles import TargetFile, Targets
from .trust_data import TrustCollection

RELEASES_ROLE = "targets/releases"  # where `docker trust sign` puts tags; the Docker client reads it first

T = TypeVar("T")


@dataclass(frozen=True)
class Accepted:
    """Which signed targets vouch for the image."""

    digest: str
    signers: tuple[tuple[str, str], ...]  # (role, target name)

    def describe(self) -> str:
        return "; ".join(f"{name!r} signed by {role}" for role, name in self.signers)


def short_digest(digest: str) -> str:
    return digest[:19] + "…" if len(digest) > 19 else digest


def verify_target(
    collection: TrustCollection,
    *,
    tag: str | None,
    digest: str | None,
    served_digest: str,
    served_size: int,
    required: Sequence[str] = (),
) -> Accepted:
    """Which signed targets vouch for the manifest the registry serves; raises a NotaryError
    (NoTrustData, TargetMismatch, DelegationMissing, or one from a delegation file) when none do.

    `digest` is the digest the reference pins (then any signed target with that digest counts),
    else `tag` names the target. `served_digest`/`served_size` describe the manifest fetched from
    the registry for that reference (for a digest reference they hash to `digest`).
    """
    gun = collection.gun
    if digest is not None:
        return _verify_digest(collection, digest, served_size, required)
    assert tag is not None
    if required:
        signers = []
        for role_name in required:
            role = collection.role(role_name)
            if role is None:
                raise DelegationMissing(
                    f"the required delegation {role_name} did not sign tag {tag!r}: {collection.why_absent(role_name)}"
                )
            target = role.target(tag)
            if target is None:
                others = _quietly(lambda: [t.role.name for t in collection.walk("targets", tag) if t.target(tag) is not None], [])
                elsewhere = f" (it is signed by {', '.join(others)})" if others else ""
                raise DelegationMissing(f"the required delegation {role_name} did not sign tag {tag!r} in {gun}{elsewhere}")
            _verify_match(target, role_name, tag, served_digest, served_size)
            signers.append((role_name, tag))
        return Accepted(served_digest, tuple(signers))
    found = _first_target(collection, tag)
    if found is None:
        signed = sorted(_quietly(lambda: {t.name for role in collection.walk("targets") for t in role.signed_targets()}, set()))
        shown = ", ".join(signed[:10]) + (", …" if len(signed) > 10 else "") if signed else "none"
        raise NoTrustData(f"no trust data for the tag {tag!r} in {gun} (signed tags: {shown})")
    role_name, target = found
    _verify_match(target, role_name, tag, served_digest, served_size)
    return Accepted(served_digest, ((role_name, tag),))


def _quietly(collect: Callable[[], T], empty: T) -> T:
    """Extra detail for a message: a broken delegation elsewhere must not replace the real answer."""
    try:
        return collect()
    except NotaryError:
        return empty


def _first_target(collection: TrustCollection, tag: str) -> tuple[str, TargetFile] | None:
    """As the Docker client looks a tag up: targets/releases (and below) first, then the whole tree."""
    for start in (RELEASES_ROLE, "targets"):
        for role in collection.walk(start, tag):
            target = role.target(tag)
            if target is not None:
                return role.role.name, target
    return None


def _verify_match(target: TargetFile, role: str, tag: str, served_digest: str, served_size: int) -> None:
    if target.matches(served_digest, served_size):
        return
    signed = target.digest("sha256") or "a digest of another algorithm"
    raise TargetMismatch(
        f"the digest differs from the signed one: tag {tag!r} is signed by {role} as "
        f"{short_digest(signed)} ({target.length} bytes), but the registry serves "
        f"{short_digest(served_digest)} ({served_size} bytes)"
    )


def _verify_digest(collection: TrustCollection, digest: str, size: int, required: Sequence[str]) -> Accepted:
    gun = collection.gun

    def carrying(role: Targets) -> list[TargetFile]:
        return [t for t in role.signed_targets() if t.matches(digest, size)]

    if required:
        signers = []
        for role_name in required:
            role = collection.role(role_name)
            if role is None:
                raise DelegationMissing(
                    f"the required delegation {role_name} did not sign digest {short_digest(digest)}: "
                    f"{collection.why_absent(role_name)}"
                )
            matches = carrying(role)
            if not matches:
                raise DelegationMissing(
                    f"the required delegation {role_name} did not sign digest {short_digest(digest)} in {gun}"
                )
            signers.append((role_name, matches[0].name))
        return Accepted(digest, tuple(signers))
    for start in (RELEASES_ROLE, "targets"):
        for role in collection.walk(start):
            matches = carrying(role)
            if matches:
                return Accepted(digest, ((role.role.name, matches[0].name),))
    raise NoTrustData(f"no trust data for digest {short_digest(digest)} in {gun}: no signed target carries it")
