"""Specification of the warm path (signgate.fastpath).

Once the full path has admitted an image, it leaves a request-level entry under
$SIGNGATE_CACHE_DIR/f/: "under the configuration file with exactly these bytes, image string X
passed, until T, provided these key files still have these contents". The next request whose
images all have such entries is answered by the standard library alone.

The one property that matters: the fast path never admits what the full path would deny. Every
case below changes one thing after a first admission and checks that the answer is the full
path's (the decision log of the fast path says `"cache": {"fast": true}`; the full path's does
not). The hook runs as a real subprocess against a real registry on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from support.contract import BINDING, HOOK, HookRun, admission_request, pod_spec, request_for, run_contexts, run_request, workload, write_config
from signgate import fastpath
from support.oci import PushedImage, RegistryHTTP, push_image
from support.registry import Registry
from support.signer import TestKey, sign_legacy


def is_fast(run: HookRun) -> bool:
    return any(
        entry.get("msg") == "signgate decision" and isinstance(entry.get("cache"), dict) and entry["cache"].get("fast") is True
        for entry in run.logs
    )


@dataclass
class World:
    """A signed and an unsigned image in the shared registry, a rewritable key file, a cache."""

    tmp: Path
    registry: Registry
    keys: dict[str, TestKey]
    key_path: Path
    cache: Path
    signed: PushedImage
    unsigned: PushedImage

    def config(self, *, comment: str = "", **top: Any) -> Path:
        return write_config(self.tmp, self.key_path, self.registry.host, comment=comment, **top)

    def admit(self, config: Path, request: dict[str, Any] | list[str], *, env: dict[str, str] | None = None) -> HookRun:
        if isinstance(request, list):
            request = request_for("Pod", request)
        environment = {"SIGNGATE_CACHE_DIR": str(self.cache)} if env is None else env
        run = run_request(config, request, env=environment)
        assert run.returncode == 0 and run.response is not None, run.stderr
        return run

    def fast_entries(self) -> list[Path]:
        directory = self.cache / "f"
        return sorted(directory.iterdir()) if directory.exists() else []

    def entry_of(self, config: Path, image: str) -> Path:
        return Path(fastpath.entry_path(str(self.cache), fastpath.config_digest(config.read_bytes()), image))


@pytest.fixture
def world(tmp_path: Path, registry: Registry, http: RegistryHTTP, repo: str, keys: dict[str, TestKey]) -> World:
    key_path = tmp_path / "cosign.pub"
    key_path.write_bytes(keys["ecdsa-p256"].pub_path.read_bytes())
    signed = push_image(http, repo, "v1")
    sign_legacy(http, repo, signed.digest, keys["ecdsa-p256"])
    unsigned = push_image(http, repo, "unsigned")
    return World(tmp_path, registry, keys, key_path, tmp_path / "cache", signed, unsigned)


# ---- the warm path answers --------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind,by,init",
    [
        ("Pod", "tag", False),
        ("Pod", "digest", False),
        ("Deployment", "tag", False),
        ("CronJob", "digest", False),
        ("Pod", "tag", True),
    ],
    ids=["pod-by-tag", "pod-by-digest", "deployment", "cronjob", "pod-with-an-init-container"],
)
def test_the_second_admission_is_answered_by_the_fast_path_without_the_registry(world: World, kind: str, by: str, init: bool) -> None:
    image = world.signed.reference if by == "tag" else world.signed.by_digest
    config = world.config()
    request = lambda: request_for(kind, [image], init=[image] if init else [])  # noqa: E731

    first = world.admit(config, request())
    assert first.allowed and not is_fast(first)
    mark = world.registry.mark()
    second = world.admit(config, request())
    assert second.response == {"allowed": True}
    assert is_fast(second)
    assert world.registry.count_requests(mark) == 0
    log = second.decision_log
    assert log["verdict"] == "allowed" and log["kind"] == kind and log["operation"] == "CREATE"
    assert {(entry["image"], entry["verdict"], entry["reason"]) for entry in log["images"]} == {(image, "pass", "verified")}
    assert log["cache"] == {"fast": True, "hits": 1}


def test_the_fast_path_imports_neither_the_library_nor_yaml_http_or_crypto(world: World) -> None:
    config = world.config()
    world.admit(config, [world.signed.reference])
    env = {"SIGNGATE_CACHE_DIR": str(world.cache), "PYTHONPROFILEIMPORTTIME": "1"}
    second = world.admit(config, [world.signed.reference], env=env)
    assert is_fast(second)
    imported = {line.rsplit("|", 1)[-1].strip() for line in second.stderr.splitlines() if line.startswith("import time:")}
    assert "signgate.fastpath" in imported, "control: import times were recorded"
    heavy = {"yaml", "requests", "cryptography", "signgate.config", "signgate.hook", "signgate.decision", "signgate.registry"}
    assert imported & heavy == set()


# ---- never admits what the full path would deny ----------------------------------------------


@dataclass(frozen=True)
class Change:
    """What happens between a first allowed admission (of `world.signed.reference`) and the next."""

    then: Callable[[World, Path], tuple[Path, dict[str, Any]]]  # -> (config, request) of the next admission
    allowed: bool
    base: dict[str, Any] | None = None  # top-level config fields of the first admission


def _pod(*images: str) -> dict[str, Any]:
    return request_for("Pod", list(images))


def _other_unsigned_image(w: World, config: Path) -> tuple[Path, dict[str, Any]]:
    return config, _pod(w.signed.reference, w.unsigned.reference)


def _same_image_by_digest(w: World, config: Path) -> tuple[Path, dict[str, Any]]:
    return config, _pod(w.signed.by_digest)


def _rule_now_denies(w: World, config: Path) -> tuple[Path, dict[str, Any]]:
    rules = [{"images": f"{w.signed.repository}*", "action": "deny", "message": "withdrawn"}, {"images": "**"}]
    return w.config(policy=rules), _pod(w.signed.reference)


def _require_digest_now(w: World, config: Path) -> tuple[Path, dict[str, Any]]:
    return w.config(requireDigest=True), _pod(w.signed.reference)


def _config_reworded(w: World, config: Path) -> tuple[Path, dict[str, Any]]:
    config.write_text(config.read_text() + "# reworded\n")  # same path, other bytes
    return config, _pod(w.signed.reference)


def _key_rotated(w: World, config: Path) -> tuple[Path, dict[str, Any]]:
    w.key_path.write_bytes(w.keys["other-ecdsa-p256"].pub_path.read_bytes())
    return config, _pod(w.signed.reference)


def _key_deleted(w: World, config: Path) -> tuple[Path, dict[str, Any]]:
    w.key_path.unlink()
    return config, _pod(w.signed.reference)


def _entry_expired(w: World, config: Path) -> tuple[Path, dict[str, Any]]:
    path = w.entry_of(config, w.signed.reference)
    entry = json.loads(path.read_bytes())
    path.write_text(json.dumps({**entry, "expires": time.time() - 1}))
    return config, _pod(w.signed.reference)


def _more_images_than_the_limit(w: World, config: Path) -> tuple[Path, dict[str, Any]]:
    return config, _pod(*[w.signed.reference] * 3)


def _delete(w: World, config: Path) -> tuple[Path, dict[str, Any]]:
    return config, admission_request(workload("Pod", pod_spec([w.signed.reference])), operation="DELETE")


def _connect(w: World, config: Path) -> tuple[Path, dict[str, Any]]:
    return config, admission_request(workload("Pod", pod_spec([w.signed.reference])), operation="CONNECT")


def _not_a_pod_kind(w: World, config: Path) -> tuple[Path, dict[str, Any]]:
    obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"image": w.signed.reference}}
    return config, admission_request(obj, kind="ConfigMap")


def _image_not_a_string(w: World, config: Path) -> tuple[Path, dict[str, Any]]:
    request = _pod(w.signed.reference)
    request["object"]["spec"]["containers"].append({"name": "odd", "image": 42})
    return config, request


CHANGES: dict[str, Change] = {
    "a-different-unsigned-image-in-the-request-denied": Change(_other_unsigned_image, False),
    "the-same-image-by-another-name-full-path": Change(_same_image_by_digest, True),
    "config-bytes-changed-a-rule-now-denies-denied": Change(_rule_now_denies, False),
    "config-bytes-changed-requireDigest-denied": Change(_require_digest_now, False),
    "config-bytes-changed-harmlessly-full-path": Change(_config_reworded, True),
    "key-file-contents-changed-denied": Change(_key_rotated, False),
    "key-file-deleted-denied": Change(_key_deleted, False),
    "entry-expired-full-path": Change(_entry_expired, True),
    "more-images-than-maxImagesPerRequest-denied": Change(_more_images_than_the_limit, False, {"limits": {"maxImagesPerRequest": 2}}),
    "delete-full-path": Change(_delete, True),
    "connect-full-path": Change(_connect, True),
    "not-a-pod-kind-full-path": Change(_not_a_pod_kind, True),
    "an-image-that-is-not-a-string-denied": Change(_image_not_a_string, False),
}


@pytest.mark.parametrize("change", list(CHANGES.values()), ids=list(CHANGES))
def test_the_fast_path_never_answers_after_a_change(world: World, change: Change) -> None:
    config = world.config(**(change.base or {}))
    assert world.admit(config, [world.signed.reference]).allowed
    assert world.fast_entries(), "control: the first admission left a fast entry"

    next_config, request = change.then(world, config)
    run = world.admit(next_config, request)
    assert not is_fast(run)
    assert run.allowed is change.allowed, run.message
    assert run.decision_log["verdict"] == ("allowed" if change.allowed else "denied")


def test_a_mutating_context_is_left_to_the_full_path(world: World) -> None:
    config = world.config()
    world.admit(config, [world.signed.reference])
    context = [{"binding": BINDING, "type": "Mutating", "review": {"request": _pod(world.signed.reference)}}]
    run = run_contexts(config, context, env={"SIGNGATE_CACHE_DIR": str(world.cache)})
    assert run.returncode == 0 and run.response is not None and run.response.get("allowed") is True
    assert not is_fast(run)


def test_two_validating_contexts_are_left_to_the_full_path(world: World) -> None:
    config = world.config()
    world.admit(config, [world.signed.reference])
    context = [
        {"binding": BINDING, "type": "Validating", "review": {"request": _pod(world.signed.reference)}},
        {"binding": BINDING, "type": "Validating", "review": {"request": _pod(world.unsigned.reference)}},
    ]
    run = run_contexts(config, context, env={"SIGNGATE_CACHE_DIR": str(world.cache)})
    assert run.response is not None and not is_fast(run)


# ---- lifetimes --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "by,cache_settings,lifetime",
    [
        ("tag", {"ttlSeconds": 600, "tagTtlSeconds": 30}, 30),
        ("digest", {"ttlSeconds": 600, "tagTtlSeconds": 30}, 600),
        ("static-allow", {"ttlSeconds": 300, "tagTtlSeconds": 30}, 300),
    ],
    ids=["a-tag-entry-lives-tagTtlSeconds", "a-digest-entry-lives-ttlSeconds", "a-static-allow-lives-ttlSeconds"],
)
def test_fast_entry_lifetimes(world: World, by: str, cache_settings: dict[str, float], lifetime: float) -> None:
    image = {"tag": world.signed.reference, "digest": world.signed.by_digest, "static-allow": "registry.example/team/app:1"}[by]
    policy = [{"images": "registry.example/**", "action": "allow"}, {"images": "**"}]
    config = world.config(cache=cache_settings, policy=policy)
    before = time.time()
    assert world.admit(config, [image]).allowed
    after = time.time()
    expires = json.loads(world.entry_of(config, image).read_bytes())["expires"]
    assert before + lifetime <= expires <= after + lifetime


def test_a_fast_entry_never_outlives_the_cached_verdict_it_came_from(world: World) -> None:
    first_config = world.config(cache={"ttlSeconds": 600})
    assert world.admit(first_config, [world.signed.by_digest]).allowed
    [verdict_file] = (world.cache / "v").iterdir()
    verdict_expires = json.loads(verdict_file.read_bytes())["expires"]

    time.sleep(0.05)
    later_config = world.config(cache={"ttlSeconds": 600}, comment="same policy")
    second = world.admit(later_config, [world.signed.by_digest])
    assert second.decision_log["cache"] == {"hits": 1, "misses": 0}, "control: answered from the verdict cache"
    assert json.loads(world.entry_of(later_config, world.signed.by_digest).read_bytes())["expires"] == verdict_expires


@pytest.mark.parametrize(
    "by,cache_settings",
    [("tag", {"tagTtlSeconds": 1}), ("digest", {"ttlSeconds": 1, "negativeTtlSeconds": 1})],
    ids=["tag-entry-after-tagTtlSeconds-full-path", "digest-entry-after-ttlSeconds-full-path"],
)
def test_an_expired_fast_entry_is_not_used(world: World, by: str, cache_settings: dict[str, float]) -> None:
    image = world.signed.reference if by == "tag" else world.signed.by_digest
    config = world.config(cache=cache_settings)
    assert world.admit(config, [image]).allowed
    expires = json.loads(world.entry_of(config, image).read_bytes())["expires"]
    time.sleep(max(0.0, expires - time.time() + 0.1))
    run = world.admit(config, [image])
    assert run.allowed and not is_fast(run)


# ---- corrupt entries ----------------------------------------------------------------------------


def _rewrite(transform: Callable[[dict[str, Any]], Any]) -> Callable[[Path], None]:
    def apply(path: Path) -> None:
        path.write_text(json.dumps(transform(json.loads(path.read_bytes()))))

    return apply


def _as_directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _as_fifo(path: Path) -> None:
    # A plain open() of a FIFO waits for a writer: the hook would never answer.
    path.unlink()
    os.mkfifo(path)


def _as_symlink_to_itself_elsewhere(path: Path) -> None:
    # The same valid bytes, through a link: entries are only ever written as regular files.
    elsewhere = path.with_name("elsewhere.data")
    path.rename(elsewhere)
    path.symlink_to(elsewhere)


CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "empty-file": lambda p: p.write_bytes(b""),
    "truncated-json": lambda p: p.write_bytes(p.read_bytes()[:30]),
    "not-json": lambda p: p.write_bytes(b"\xff\xfe garbage"),
    "json-but-not-an-object": lambda p: p.write_text("[]"),
    "deeply-nested-json": lambda p: p.write_text("[" * 10_000),
    "huge-file": _rewrite(lambda e: {**e, "padding": "x" * (fastpath.MAX_ENTRY_BYTES + 1)}),
    "wrong-format": _rewrite(lambda e: {**e, "format": fastpath.FORMAT + 1}),
    "another-image-inside": _rewrite(lambda e: {**e, "image": "registry.example/other:1"}),
    "expiry-not-a-number": _rewrite(lambda e: {**e, "expires": "never"}),
    # NaN is never "<= now": such an entry would never expire (json writes NaN and reads it back).
    "expiry-nan": _rewrite(lambda e: {**e, "expires": float("nan")}),
    "expiry-infinite": _rewrite(lambda e: {**e, "expires": float("inf")}),
    "expiry-huge-integer": _rewrite(lambda e: {**e, "expires": 10**400}),
    "max-images-missing": _rewrite(lambda e: {k: v for k, v in e.items() if k != "max_images"}),
    "max-images-not-an-integer": _rewrite(lambda e: {**e, "max_images": "100"}),
    "dependencies-not-a-list": _rewrite(lambda e: {**e, "deps": {"a": "b"}}),
    "dependency-malformed": _rewrite(lambda e: {**e, "deps": [["only-a-path"]]}),
    "dependency-digest-wrong": _rewrite(lambda e: {**e, "deps": [[path, "0" * 64] for path, _ in e["deps"]]}),
    "dependency-path-unhashable": _rewrite(lambda e: {**e, "deps": [[["a"], "0" * 64]]}),
    "directory-instead-of-file": _as_directory,
    "fifo-instead-of-file": _as_fifo,
    "symbolic-link-instead-of-file": _as_symlink_to_itself_elsewhere,
}


@pytest.mark.parametrize("corrupt", list(CORRUPTIONS.values()), ids=[f"{name}-full-path" for name in CORRUPTIONS])
def test_a_corrupt_fast_entry_leaves_the_answer_to_the_full_path(world: World, corrupt: Callable[[Path], None]) -> None:
    config = world.config()
    assert world.admit(config, [world.signed.reference]).allowed
    corrupt(world.entry_of(config, world.signed.reference))
    run = world.admit(config, [world.signed.reference])
    assert run.response == {"allowed": True}
    assert not is_fast(run)


# ---- what gets an entry -------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, ""], ids=["unset", "empty"])
def test_without_SIGNGATE_CACHE_DIR_nothing_is_written(world: World, value: str | None) -> None:
    env = {} if value is None else {"SIGNGATE_CACHE_DIR": value}
    hooks_before = sorted(p.relative_to(HOOK.parent) for p in HOOK.parent.rglob("*") if "__pycache__" not in p.parts)
    config = world.config()
    assert world.admit(config, [world.signed.reference], env=env).allowed
    mark = world.registry.mark()
    second = world.admit(config, [world.signed.reference], env=env)
    assert second.allowed and not is_fast(second)
    assert world.registry.count_requests(mark) > 0
    hooks_after = sorted(p.relative_to(HOOK.parent) for p in HOOK.parent.rglob("*") if "__pycache__" not in p.parts)
    assert hooks_after == hooks_before
    assert not world.cache.exists()


def test_a_denied_image_never_gets_a_fast_entry(world: World) -> None:
    config = world.config()
    for _ in range(2):
        run = world.admit(config, [world.unsigned.reference])
        assert not run.allowed and not is_fast(run)
    assert world.fast_entries() == []


def test_a_warn_mode_failure_never_gets_a_fast_entry_so_its_warning_is_repeated(world: World) -> None:
    config = world.config(mode="warn")
    for _ in range(2):
        run = world.admit(config, [world.unsigned.reference])
        assert run.allowed and run.warnings and not is_fast(run)
    assert world.fast_entries() == []


def test_a_static_deny_never_gets_a_fast_entry(world: World) -> None:
    config = world.config(policy=[{"images": "registry.example/**", "action": "deny"}, {"images": "**"}])
    for _ in range(2):
        run = world.admit(config, ["registry.example/team/app:1"])
        assert not run.allowed and not is_fast(run)
    assert world.fast_entries() == []


def test_in_a_denied_request_only_the_passing_image_gets_an_entry(world: World) -> None:
    config = world.config()
    images = [world.signed.reference, world.unsigned.reference]
    assert not world.admit(config, images).allowed
    assert world.fast_entries() == [world.entry_of(config, world.signed.reference)]
    again = world.admit(config, images)
    assert not again.allowed and not is_fast(again)


@pytest.mark.parametrize(
    "top,reason",
    [
        ({"policy": [{"images": "registry.example/**", "action": "allow"}, {"images": "**"}]}, "allowed-by-rule"),
        ({"policy": [{"images": "elsewhere.example/**"}], "unmatchedImages": "allow"}, "unmatched-allowed"),
    ],
    ids=["static-allow-rule-gets-a-fast-entry", "unmatched-allowed-gets-a-fast-entry"],
)
def test_static_allows_get_fast_entries(world: World, top: dict[str, Any], reason: str) -> None:
    config = world.config(**top)
    image = "registry.example/team/app:1"
    assert world.admit(config, [image]).allowed
    entry = json.loads(world.entry_of(config, image).read_bytes())
    assert entry["deps"] == [] and entry["reason"] == reason
    second = world.admit(config, [image])
    assert second.allowed and is_fast(second)
    assert second.decision_log["images"][0]["reason"] == reason


def test_a_verify_entry_depends_on_the_key_files_of_its_rule(world: World) -> None:
    config = world.config()
    world.admit(config, [world.signed.reference])
    entry = json.loads(world.entry_of(config, world.signed.reference).read_bytes())
    assert entry["deps"] == [[str(world.key_path), fastpath.file_digest(str(world.key_path))]]
    assert entry["max_images"] == 100 and entry["image"] == world.signed.reference


# ---- try_answer at unit level: False on anything unexpected, never an exception ----------------


IMAGE = "registry.example/team/app:1"
CONFIG_BYTES = b"policy: [{images: '**', action: allow}]\n"


@pytest.fixture
def unit(tmp_path: Path) -> dict[str, Any]:
    """A cache with a fast entry for IMAGE, a config, an empty response file; a valid context."""
    config = tmp_path / "config.yaml"
    config.write_bytes(CONFIG_BYTES)
    cache = tmp_path / "cache"
    fastpath.remember(str(cache), fastpath.config_digest(CONFIG_BYTES), IMAGE, [], time.time() + 600, 100, "allowed-by-rule")
    response = tmp_path / "response.json"
    response.write_text("")
    context = tmp_path / "context.json"
    environ = {
        "SIGNGATE_CACHE_DIR": str(cache),
        "SIGNGATE_CONFIG": str(config),
        "BINDING_CONTEXT_PATH": str(context),
        "VALIDATING_RESPONSE_PATH": str(response),
    }
    return {"environ": environ, "context": context, "response": response, "tmp": tmp_path}


def valid_context() -> list[dict[str, Any]]:
    return [{"binding": BINDING, "type": "Validating", "review": {"request": request_for("Pod", [IMAGE])}}]


def _request(context: list[dict[str, Any]]) -> dict[str, Any]:
    return context[0]["review"]["request"]


def _with(change: Callable[[list[dict[str, Any]]], Any]) -> Callable[[], bytes]:
    def build() -> bytes:
        context = valid_context()
        change(context)
        return json.dumps(context).encode()

    return build


def _set(path: str, value: Any) -> Callable[[list[dict[str, Any]]], None]:
    def change(context: list[dict[str, Any]]) -> None:
        target: Any = _request(context)
        *parents, last = path.split(".")
        for part in parents:
            target = target[part]
        target[last] = value

    return change


MALFORMED_CONTEXTS: dict[str, Callable[[], bytes]] = {
    "empty-file": lambda: b"",
    "not-json": lambda: b"{not json",
    "not-utf8": lambda: b"\xff\xfe\xfd",
    "json-scalar": lambda: b"42",
    "json-string": lambda: b'"Validating"',
    "empty-list": lambda: b"[]",
    "deeply-nested": lambda: b"[" * 100_000,
    "larger-than-the-limit": lambda: json.dumps(valid_context()).encode() + b" " * fastpath.MAX_CONTEXT_BYTES,
    "synchronization-only": _with(lambda c: c[0].update(type="Synchronization")),
    "two-validating-contexts": _with(lambda c: c.append(c[0])),
    "context-not-an-object": lambda: json.dumps(["Validating"]).encode(),
    "review-missing": _with(lambda c: c[0].pop("review")),
    "review-not-an-object": _with(lambda c: c[0].update(review=[1])),
    "request-not-an-object": _with(lambda c: c[0]["review"].update(request="pod")),
    "operation-missing": _with(lambda c: _request(c).pop("operation")),
    "operation-delete": _with(_set("operation", "DELETE")),
    "operation-lowercase": _with(_set("operation", "create")),
    "kind-unknown": _with(lambda c: (_set("kind", {"kind": "ConfigMap"})(c), _set("object.kind", "ConfigMap")(c))),
    "kind-not-an-object-nor-in-the-object": _with(lambda c: (_set("kind", "Pod")(c), _request(c)["object"].pop("kind"))),
    "object-null": _with(_set("object", None)),
    "object-not-an-object": _with(_set("object", "pod")),
    "spec-not-an-object": _with(_set("object.spec", [])),
    "containers-not-a-list": _with(_set("object.spec.containers", {"image": IMAGE})),
    "container-not-an-object": _with(_set("object.spec.containers", [IMAGE])),
    "image-not-a-string": _with(_set("object.spec.containers", [{"name": "c", "image": ["x"]}])),
    "image-missing": _with(_set("object.spec.containers", [{"name": "c"}])),
    "no-containers": _with(_set("object.spec.containers", [])),
    "an-image-without-an-entry": _with(_set("object.spec.containers", [{"name": "c", "image": IMAGE}, {"name": "d", "image": "other:1"}])),
}


@pytest.mark.parametrize("build", list(MALFORMED_CONTEXTS.values()), ids=[f"{name}-falls-through" for name in MALFORMED_CONTEXTS])
def test_try_answer_falls_through_on_unexpected_contexts(unit: dict[str, Any], build: Callable[[], bytes]) -> None:
    unit["context"].write_bytes(build())
    assert fastpath.try_answer(unit["environ"], time.monotonic()) is False
    assert unit["response"].read_text() == "", "the fast path writes nothing when it does not answer"


def _drop(name: str) -> Callable[[dict[str, Any]], None]:
    return lambda u: u["environ"].pop(name)


def _point(name: str, where: Callable[[dict[str, Any]], Path]) -> Callable[[dict[str, Any]], None]:
    return lambda u: u["environ"].update({name: str(where(u))})


def _directory(u: dict[str, Any]) -> Path:
    path = u["tmp"] / "a-directory"
    path.mkdir(exist_ok=True)
    return path


ENVIRONMENTS: dict[str, Callable[[dict[str, Any]], None]] = {
    "no-cache-directory": _drop("SIGNGATE_CACHE_DIR"),
    "empty-cache-directory-name": lambda u: u["environ"].update(SIGNGATE_CACHE_DIR=""),
    "other-cache-directory": _point("SIGNGATE_CACHE_DIR", lambda u: u["tmp"] / "elsewhere"),
    "no-response-path": _drop("VALIDATING_RESPONSE_PATH"),
    "no-context-path": _drop("BINDING_CONTEXT_PATH"),
    "context-file-missing": _point("BINDING_CONTEXT_PATH", lambda u: u["tmp"] / "missing.json"),
    "context-path-is-a-directory": _point("BINDING_CONTEXT_PATH", _directory),
    "config-file-missing": _point("SIGNGATE_CONFIG", lambda u: u["tmp"] / "missing.yaml"),
    "config-path-is-a-directory": _point("SIGNGATE_CONFIG", _directory),
    "config-bytes-changed": lambda u: Path(u["environ"]["SIGNGATE_CONFIG"]).write_bytes(CONFIG_BYTES + b"# changed\n"),
    "config-larger-than-the-limit": lambda u: Path(u["environ"]["SIGNGATE_CONFIG"]).write_bytes(
        CONFIG_BYTES + b"#" * fastpath.MAX_CONFIG_BYTES
    ),
    "response-path-is-a-directory": _point("VALIDATING_RESPONSE_PATH", _directory),
}


@pytest.mark.parametrize("change", list(ENVIRONMENTS.values()), ids=[f"{name}-falls-through" for name in ENVIRONMENTS])
def test_try_answer_falls_through_on_an_unexpected_environment(unit: dict[str, Any], change: Callable[[dict[str, Any]], None]) -> None:
    unit["context"].write_text(json.dumps(valid_context()))
    change(unit)
    assert fastpath.try_answer(unit["environ"], time.monotonic()) is False
    assert unit["response"].read_text() == ""


@pytest.mark.parametrize(
    "shape",
    ["list", "single-object", "admission-response-path-alias"],
    ids=["context-list-answered", "single-context-object-answered", "ADMISSION_RESPONSE_PATH-answered"],
)
def test_try_answer_admits_when_every_image_has_a_fresh_entry(unit: dict[str, Any], shape: str, capsys: pytest.CaptureFixture[str]) -> None:
    context: Any = valid_context()
    if shape == "single-object":
        context = context[0]
    if shape == "admission-response-path-alias":
        unit["environ"]["ADMISSION_RESPONSE_PATH"] = unit["environ"].pop("VALIDATING_RESPONSE_PATH")
    unit["context"].write_text(json.dumps(context))
    assert fastpath.try_answer(unit["environ"], time.monotonic()) is True
    assert json.loads(unit["response"].read_text()) == {"allowed": True}
    [log] = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert log["msg"] == "signgate decision" and log["cache"]["fast"] is True


def test_remember_refuses_an_already_expired_entry_and_a_missing_dependency(tmp_path: Path) -> None:
    digest = fastpath.config_digest(CONFIG_BYTES)
    fastpath.remember(str(tmp_path), digest, IMAGE, [], time.time() - 1, 100, "verified")
    fastpath.remember(str(tmp_path), digest, "other:1", [str(tmp_path / "missing.pub")], time.time() + 60, 100, "verified")
    assert not (tmp_path / "f").exists() or list((tmp_path / "f").iterdir()) == []


def test_remember_in_an_unusable_directory_is_no_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    fastpath.remember(str(tmp_path / "a-file"), fastpath.config_digest(CONFIG_BYTES), IMAGE, [], time.time() + 60, 100, "verified")
    assert (tmp_path / "a-file").read_text() == ""


@pytest.mark.parametrize("expires", [float("nan"), float("inf"), 10**400], ids=["nan", "infinite", "huge-integer"])
def test_an_entry_that_could_never_expire_is_never_written(tmp_path: Path, expires: float) -> None:
    fastpath.remember(str(tmp_path), fastpath.config_digest(b"{}"), "registry.example/app:1", [], expires, 100, "verified")
    assert not (tmp_path / "f").exists() or list((tmp_path / "f").iterdir()) == []


@pytest.mark.parametrize(
    "raw, expected",
    [
        pytest.param(b'{"webhook": {"deadlineSeconds": NaN}}', 8.0, id="nan"),
        pytest.param(b'{"webhook": {"deadlineSeconds": Infinity}}', 8.0, id="infinite"),
        pytest.param(b'{"webhook": {"timeoutSeconds": 1e999}}', 8.0, id="infinite-timeout"),
        pytest.param(b'{"webhook": {"deadlineSeconds": 1%s}}' % (b"0" * 400), 8.0, id="huge-integer"),
        pytest.param(b'{"webhook": {"deadlineSeconds": 4.5}}', 4.5, id="finite-kept"),
    ],
)
def test_the_wait_for_another_verifier_is_bounded_whatever_the_configuration_says(raw: bytes, expected: float) -> None:
    # The fast path waits at most 60 % of this for another process's entry; NaN would never end it.
    assert fastpath._deadline_hint(raw) == expected
