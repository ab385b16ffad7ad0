"""Specification of the hook's Prometheus metrics (signgate.metrics, and fastpath for the warm path).

shell-operator gives each hook run a file in $METRICS_PATH; the hook appends one JSON object per
line, `{"name", "action", "value", "labels"}` (+ `"buckets"` for a histogram's `observe`), and
shell-operator serves them on :9115/metrics/hooks. Every test here runs the real hook executable
against the real registry on 127.0.0.1, then reads the file back. Registry request counts are
checked against the registry's own access log.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from contract import BINDING, HookRun, admission_request, pod_spec, request_for, run_contexts, run_request, workload, write_config
from support.oci import PushedImage, RegistryHTTP, push_image
from support.registry import Registry
from support.signer import TestKey, sign_legacy

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
ALL_METRICS = {
    "signgate_decisions_total",
    "signgate_images_total",
    "signgate_cache_total",
    "signgate_registry_requests_total",
    "signgate_verification_seconds",
}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Parse the file as shell-operator does, checking every line against its format."""
    text = path.read_text()
    assert text.endswith("\n"), "every operation is a whole line"
    operations = []
    for line in text.splitlines():
        op = json.loads(line)
        assert isinstance(op, dict)
        assert set(op) <= {"name", "action", "value", "labels", "buckets", "group"}, op
        assert isinstance(op["name"], str) and METRIC_NAME.fullmatch(op["name"]), op
        assert op["name"] in ALL_METRICS, f"undocumented metric {op['name']}"
        assert op["action"] in ("add", "observe"), op
        value = op["value"]
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value), op
        labels = op.get("labels", {})
        assert isinstance(labels, dict) and all(
            isinstance(k, str) and LABEL_NAME.fullmatch(k) and isinstance(v, str) for k, v in labels.items()
        ), op
        if op["action"] == "add":
            assert value >= 0 and "buckets" not in op, "counters only go up"
        else:
            buckets = op["buckets"]
            assert buckets and all(isinstance(b, (int, float)) for b in buckets), op
            assert buckets == sorted(set(buckets)), "histogram buckets are strictly increasing"
        operations.append(op)
    return operations


def counters(ops: list[dict[str, Any]], *, skip: tuple[str, ...] = ("signgate_registry_requests_total",)) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Sum of `add` operations by (name, sorted labels)."""
    total: Counter[tuple[str, tuple[tuple[str, str], ...]]] = Counter()
    for op in ops:
        if op["action"] == "add" and op["name"] not in skip:
            total[(op["name"], tuple(sorted(op["labels"].items())))] += op["value"]
    return dict(total)


def observations(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [op for op in ops if op["action"] == "observe"]


def _sum_registry(ops: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    total: Counter[tuple[str, str]] = Counter()
    for op in ops:
        if op["name"] == "signgate_registry_requests_total":
            assert set(op["labels"]) == {"registry", "status"}
            total[(op["labels"]["registry"], op["labels"]["status"])] += op["value"]
    return dict(total)


def c(name: str, value: float, **labels: str) -> tuple[tuple[str, tuple[tuple[str, str], ...]], float]:
    return (f"signgate_{name}", tuple(sorted(labels.items()))), value


# ---- the world ------------------------------------------------------------------------------


@dataclass
class World:
    tmp: Path
    registry: Registry
    key_path: Path
    signed: PushedImage
    unsigned: PushedImage
    metrics: Path
    cache: Path

    def config(self, *, comment: str = "", **top: Any) -> Path:
        return write_config(self.tmp, self.key_path, self.registry.host, comment=comment, **top)

    def env(self) -> dict[str, str]:
        return {"METRICS_PATH": str(self.metrics), "SIGNGATE_CACHE_DIR": str(self.cache)}

    def admit(self, config: Path, request: dict[str, Any]) -> HookRun:
        run = run_request(config, request, env=self.env())
        assert run.returncode == 0 and run.response is not None, run.stderr
        return run

    def fresh_metrics(self) -> None:
        """shell-operator gives every run a new file."""
        self.metrics = self.tmp / f"metrics-{time.monotonic_ns()}.jsonl"


@pytest.fixture
def world(tmp_path: Path, registry: Registry, http: RegistryHTTP, repo: str, keys: dict[str, TestKey]) -> World:
    signed = push_image(http, repo, "v1")
    sign_legacy(http, repo, signed.digest, keys["ecdsa-p256"])
    unsigned = push_image(http, f"{repo}-unsigned", "v1")
    return World(tmp_path, registry, keys["ecdsa-p256"].pub_path, signed, unsigned, tmp_path / "metrics.jsonl", tmp_path / "cache")


def pod(*images: str) -> dict[str, Any]:
    return request_for("Pod", list(images))


# ---- one decision, its metrics ---------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    request: Callable[[World], dict[str, Any]]
    expected: dict[Any, float]  # every counter except registry requests, exactly
    result: str  # the histogram's label
    top: dict[str, Any] | None = None  # config fields
    contacts_registry: bool = True


STATIC_POLICY = {"policy": [{"images": "registry.example/**", "action": "allow"}, {"images": "**"}]}

CASES: dict[str, Case] = {
    "signed-image-allowed-verified": Case(
        lambda w: pod(w.signed.reference),
        dict([c("decisions_total", 1, result="allowed", reason="verified"),
              c("images_total", 1, result="pass", reason="verified", mode="enforce"),
              c("cache_total", 1, result="miss")]),
        "allowed",
    ),
    "unsigned-image-denied-no-signature": Case(
        lambda w: pod(w.unsigned.reference),
        dict([c("decisions_total", 1, result="denied", reason="no-signature"),
              c("images_total", 1, result="fail", reason="no-signature", mode="enforce"),
              c("cache_total", 1, result="miss")]),
        "denied",
    ),
    "warn-mode-unsigned-allowed-with-the-failure-reason": Case(
        lambda w: pod(w.unsigned.reference),
        dict([c("decisions_total", 1, result="allowed", reason="no-signature"),
              c("images_total", 1, result="fail", reason="no-signature", mode="warn"),
              c("cache_total", 1, result="miss")]),
        "allowed",
        {"mode": "warn"},
    ),
    "two-containers-one-image-counted-per-container-looked-up-once": Case(
        lambda w: pod(w.signed.reference, w.signed.reference),
        dict([c("decisions_total", 1, result="allowed", reason="verified"),
              c("images_total", 2, result="pass", reason="verified", mode="enforce"),
              c("cache_total", 1, result="miss")]),
        "allowed",
    ),
    "signed-and-unsigned-denied-by-the-failure": Case(
        lambda w: pod(w.signed.reference, w.unsigned.reference),
        dict([c("decisions_total", 1, result="denied", reason="no-signature"),
              c("images_total", 1, result="pass", reason="verified", mode="enforce"),
              c("images_total", 1, result="fail", reason="no-signature", mode="enforce"),
              c("cache_total", 2, result="miss")]),
        "denied",
    ),
    "a-denial-is-explained-by-the-enforce-failure-not-an-earlier-warn-one": Case(
        lambda w: pod(w.unsigned.reference, "registry.example/team/app:1"),
        dict([c("decisions_total", 1, result="denied", reason="denied-by-rule"),
              c("images_total", 1, result="fail", reason="no-signature", mode="warn"),
              c("images_total", 1, result="fail", reason="denied-by-rule", mode="enforce"),
              c("cache_total", 1, result="miss")]),
        "denied",
        {"policy": [{"images": "**", "mode": "warn"}, {"images": "registry.example/**", "action": "deny"}]},
    ),
    "static-allow-no-registry-no-cache": Case(
        lambda w: pod("registry.example/team/app:1"),
        dict([c("decisions_total", 1, result="allowed", reason="static"),
              c("images_total", 1, result="pass", reason="allowed-by-rule", mode="enforce")]),
        "allowed",
        STATIC_POLICY,
        contacts_registry=False,
    ),
    "invalid-reference-denied": Case(
        lambda w: pod("Not A Reference"),
        dict([c("decisions_total", 1, result="denied", reason="invalid-reference"),
              c("images_total", 1, result="fail", reason="invalid-reference", mode="enforce")]),
        "denied",
        contacts_registry=False,
    ),
    "delete-not-checked": Case(
        lambda w: admission_request(workload("Pod", pod_spec([w.unsigned.reference])), operation="DELETE"),
        dict([c("decisions_total", 1, result="allowed", reason="not-checked")]),
        "allowed",
        contacts_registry=False,
    ),
    "too-many-images-denied-as-such": Case(
        lambda w: pod(*[w.signed.reference] * 3),
        dict([c("decisions_total", 1, result="denied", reason="too-many-images")]),
        "denied",
        {"limits": {"maxImagesPerRequest": 2}},
        contacts_registry=False,
    ),
}


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_a_decision_writes_its_metrics(world: World, case: Case) -> None:
    config = world.config(**(case.top or {}))
    mark = world.registry.mark()
    run = world.admit(config, case.request(world))
    logged = world.registry.requests_since(mark)
    ops = read_metrics(world.metrics)

    assert counters(ops) == case.expected
    [histogram] = observations(ops)
    assert histogram["name"] == "signgate_verification_seconds" and histogram["labels"] == {"result": case.result}
    assert histogram["value"] > 0
    assert run.allowed is (case.result == "allowed")

    by_status = _sum_registry(ops)
    assert sum(by_status.values()) == len(logged), "the metric counts every request the registry saw"
    assert bool(logged) is case.contacts_registry
    assert {host for host, _ in by_status} <= {world.registry.host}


def test_registry_requests_are_counted_by_status_and_a_404_shows(world: World) -> None:
    mark = world.registry.mark()
    world.admit(world.config(), pod(world.signed.reference))
    logged = Counter(str(r.status) for r in world.registry.requests_since(mark))
    by_status = _sum_registry(read_metrics(world.metrics))
    # distribution 2.8 has no referrers API, so signgate's probe of it is answered 404
    assert by_status.get((world.registry.host, "404"), 0) >= 1
    assert {status: n for (_, status), n in by_status.items()} == dict(logged)


def test_an_unreachable_registry_counts_as_status_error(tmp_path: Path, fresh_registry: Callable[..., Registry],
                                                       http_for: Callable[..., RegistryHTTP], keys: dict[str, TestKey]) -> None:
    registry = fresh_registry()
    image = push_image(http_for(registry), "t/gone", "v1")
    host = registry.host
    registry.stop()
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"keys": {"default": str(keys["ecdsa-p256"].pub_path)},
                                      "registries": {"insecure": [host]}, "policy": [{"images": "**"}]}))
    metrics = tmp_path / "metrics.jsonl"
    run = run_request(config, pod(image.reference), env={"METRICS_PATH": str(metrics)})
    assert not run.allowed
    ops = read_metrics(metrics)
    by_status = _sum_registry(ops)
    assert set(by_status) == {(host, "error")}
    reason = run.decision_log["images"][0]["reason"]
    assert counters(ops)[c("decisions_total", 1, result="denied", reason=reason)[0]] == 1


def test_cache_hits_are_counted_and_cost_no_registry_request(world: World) -> None:
    world.admit(world.config(), pod(world.signed.by_digest, world.unsigned.by_digest))
    world.fresh_metrics()
    # Other config bytes: the fast path does not answer, the verdict cache does.
    mark = world.registry.mark()
    world.admit(world.config(comment="reworded"), pod(world.signed.by_digest, world.unsigned.by_digest))
    ops = read_metrics(world.metrics)
    assert counters(ops) == dict([
        c("decisions_total", 1, result="denied", reason="no-signature"),
        c("images_total", 1, result="pass", reason="verified", mode="enforce"),
        c("images_total", 1, result="fail", reason="no-signature", mode="enforce"),
        c("cache_total", 2, result="hit"),
    ])
    assert _sum_registry(ops) == {}
    assert world.registry.requests_since(mark) == []


@pytest.mark.parametrize(
    "image,top,reason",
    [
        ("signed", {}, "verified"),
        ("registry.example/team/app:1", STATIC_POLICY, "static"),
    ],
    ids=["fast-path-verified", "fast-path-static"],
)
def test_the_fast_path_writes_metrics_too(world: World, image: str, top: dict[str, Any], reason: str) -> None:
    image = world.signed.reference if image == "signed" else image
    config = world.config(**top)
    world.admit(config, pod(image, image))
    world.fresh_metrics()
    run = world.admit(config, pod(image, image))
    assert run.decision_log["cache"].get("fast") is True, "control: the fast path answered"
    ops = read_metrics(world.metrics)
    expected = dict([c("decisions_total", 1, result="allowed", reason=reason), c("cache_total", 1, result="hit")])
    assert {k: v for k, v in counters(ops).items() if k[0] != "signgate_images_total"} == expected
    [histogram] = observations(ops)
    assert histogram["name"] == "signgate_verification_seconds" and histogram["labels"] == {"result": "allowed"}


def test_the_fast_path_counts_images_like_the_full_path(world: World) -> None:
    config = world.config()
    world.admit(config, pod(world.signed.reference, world.signed.reference))
    full = {k: v for k, v in counters(read_metrics(world.metrics)).items() if k[0] == "signgate_images_total"}
    world.fresh_metrics()
    world.admit(config, pod(world.signed.reference, world.signed.reference))
    fast = {k: v for k, v in counters(read_metrics(world.metrics)).items() if k[0] == "signgate_images_total"}
    assert fast == full == dict([c("images_total", 2, result="pass", reason="verified", mode="enforce")])


# ---- errors -----------------------------------------------------------------------------------


def _invalid_config(w: World) -> tuple[Path, Any, bytes | None]:
    path = w.tmp / "broken.yaml"
    path.write_text("policy: [{images: '**', action: maybe}]\n")
    return path, [{"binding": BINDING, "type": "Validating", "review": {"request": pod(w.signed.reference)}}], None


def _missing_config(w: World) -> tuple[Path, Any, bytes | None]:
    return w.tmp / "missing.yaml", [{"binding": BINDING, "type": "Validating", "review": {"request": pod(w.signed.reference)}}], None


def _context_not_json(w: World) -> tuple[Path, Any, bytes | None]:
    return w.config(), None, b"{not json"


def _context_not_json_warn(w: World) -> tuple[Path, Any, bytes | None]:
    return w.config(mode="warn"), None, b"{not json"


@pytest.mark.parametrize(
    "setup,result,reason",
    [
        (_invalid_config, "denied", "invalid-config"),
        (_missing_config, "denied", "invalid-config"),
        (_context_not_json, "denied", "invalid-input"),
        (_context_not_json_warn, "allowed", "invalid-input"),
    ],
    ids=["invalid-config-denied", "missing-config-denied", "binding-context-not-json-denied", "binding-context-not-json-warn-mode-allowed"],
)
def test_the_error_path_writes_a_decision_metric(world: World, setup: Callable[[World], tuple[Path, Any, bytes | None]], result: str, reason: str) -> None:
    config, contexts, raw = setup(world)
    run = run_contexts(config, contexts, raw_context=raw, env=world.env())
    assert run.returncode == 0 and run.allowed is (result == "allowed")
    ops = read_metrics(world.metrics)
    assert counters(ops) == dict([c("decisions_total", 1, result=result, reason=reason)])


# ---- metrics are never worth failing a decision for -------------------------------------------


@pytest.mark.parametrize("path", ["fast", "full", "error"])
def test_an_unwritable_metrics_path_does_not_change_the_answer(world: World, path: str) -> None:
    config = world.config() if path != "error" else world.tmp / "missing.yaml"
    env = {**world.env(), "METRICS_PATH": str(world.tmp)}  # a directory: opening it for append fails
    if path == "fast":
        world.admit(config, pod(world.signed.reference))
    run = run_request(config, pod(world.signed.reference), env=env)
    assert run.returncode == 0 and run.response is not None
    assert run.allowed is (path != "error")
    if path == "fast":
        assert run.decision_log["cache"].get("fast") is True


def test_runs_append_to_the_metrics_file(world: World) -> None:
    config = world.config()
    for _ in range(3):
        world.admit(config, pod(world.signed.reference))
    ops = read_metrics(world.metrics)
    assert counters(ops)[c("decisions_total", 3, result="allowed", reason="verified")[0]] == 3
    assert len(observations(ops)) == 3


def test_without_METRICS_PATH_nothing_is_written(world: World) -> None:
    before = set(world.tmp.iterdir())
    run = run_request(world.config(), pod(world.signed.reference))
    assert run.allowed
    assert {p for p in set(world.tmp.iterdir()) - before if "metrics" in p.name} == set()
