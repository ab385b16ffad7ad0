"""Specification of the hook's Prometheus metrics (signgate.metrics, fastpath for the warm path
and the totals file).

shell-operator gives each hook run a file in $METRICS_PATH; the hook appends one JSON object per
line, `{"name", "action", "value", "labels"}`, and shell-operator serves them on
:9115/metrics/hooks. Since shell-operator v1.10 it expires all of a hook's series before it
applies a run's operations, so every run `set`s the totals kept in $SIGNGATE_CACHE_DIR/m: a run's
own counts are the difference between its totals and the previous run's. Most tests here run the
real hook executable against the real registry on 127.0.0.1, then read the file back; registry
request counts are checked against the registry's own access log.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from support.contract import (
    BINDING, HOOK, HookRun, admission_request, hook_env, pod_spec, request_for, run_contexts, run_request, workload, write_config,
)
from signgate import totals as totals_store
from support.oci import PushedImage, RegistryHTTP, push_image
from support.registry import Registry
from support.service import VerifierService
from support.signer import TestKey, sign_legacy

METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
COUNTERS = {
    "signgate_decisions_total",
    "signgate_images_total",
    "signgate_cache_total",
    "signgate_registry_requests_total",
}
HISTOGRAM = "signgate_verification_seconds"
LIB = HOOK.parent / "lib"
ALL_METRICS = COUNTERS | {f"{HISTOGRAM}_bucket", f"{HISTOGRAM}_sum", f"{HISTOGRAM}_count"}
Series = tuple[str, tuple[tuple[str, str], ...]]


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """Parse the file as shell-operator does, checking every line against its format."""
    text = path.read_text()
    assert text.endswith("\n"), "every operation is a whole line"
    operations = []
    for line in text.splitlines():
        op = json.loads(line)
        assert isinstance(op, dict)
        assert set(op) == {"name", "action", "value", "labels"}, op
        assert isinstance(op["name"], str) and METRIC_NAME.fullmatch(op["name"]), op
        assert op["name"] in ALL_METRICS, f"undocumented metric {op['name']}"
        # shell-operator expires all of a hook's series before each run's operations: only a
        # `set` of the whole total survives that (signgate.totals).
        assert op["action"] == "set", op
        value = op["value"]
        assert isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0, op
        labels = op["labels"]
        assert isinstance(labels, dict) and all(
            isinstance(k, str) and LABEL_NAME.fullmatch(k) and isinstance(v, str) for k, v in labels.items()
        ), op
        assert ("le" in labels) is (op["name"] == f"{HISTOGRAM}_bucket"), op
        operations.append(op)
    return operations


def totals(ops: list[dict[str, Any]]) -> dict[Series, float]:
    """Every series' value as shell-operator shows it after applying the operations."""
    return {(op["name"], tuple(sorted(op["labels"].items()))): op["value"] for op in ops}


def counters(ops: list[dict[str, Any]], *, skip: tuple[str, ...] = ("signgate_registry_requests_total",)) -> dict[Series, float]:
    """The counters' totals, by (name, sorted labels)."""
    return {key: value for key, value in totals(ops).items() if key[0] in COUNTERS and key[0] not in skip}


def histograms(ops: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The histogram by its `result` label: cumulative buckets by `le`, sum and count, checked to
    be a consistent classic Prometheus histogram."""
    found: dict[str, dict[str, Any]] = {}
    for (name, labels), value in totals(ops).items():
        if not name.startswith(HISTOGRAM):
            continue
        label = dict(labels)
        entry = found.setdefault(label.pop("result"), {"buckets": {}})
        if name.endswith("_bucket"):
            entry["buckets"][label.pop("le")] = value
        else:
            entry[name.rsplit("_", 1)[1]] = value
        assert set(label) <= {"le"}, labels
    for entry in found.values():
        bounds = [float(le) for le in entry["buckets"]]
        assert bounds == sorted(bounds) and bounds[-1] == math.inf, entry
        values = list(entry["buckets"].values())
        assert values == sorted(values), "buckets are cumulative"
        assert values[-1] == entry["count"] and entry["sum"] >= 0, entry
    return found


def _sum_registry(ops: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    total: dict[tuple[str, str], float] = {}
    for (name, labels), value in totals(ops).items():
        if name == "signgate_registry_requests_total":
            assert {k for k, _ in labels} == {"registry", "status"}
            total[(dict(labels)["registry"], dict(labels)["status"])] = value
    return total


def added(before: dict[Series, float], after: dict[Series, float]) -> dict[Series, float]:
    """What a run added: every total it shows, minus the one shown before it (0 if none)."""
    assert set(before) <= set(after), "every run sets every total, or shell-operator's expiry drops it"
    assert all(after[key] >= value for key, value in before.items()), "totals only grow"
    return {key: after[key] - before.get(key, 0) for key in after if after[key] != before.get(key, 0)}


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
    histogram = histograms(ops)
    assert set(histogram) == {case.result}
    assert histogram[case.result]["count"] == 1 and histogram[case.result]["sum"] > 0
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
    run = run_request(config, pod(image.reference), env={"METRICS_PATH": str(metrics), "SIGNGATE_CACHE_DIR": str(tmp_path / "cache")})
    assert not run.allowed
    ops = read_metrics(metrics)
    by_status = _sum_registry(ops)
    assert set(by_status) == {(host, "error")}
    reason = run.decision_log["images"][0]["reason"]
    assert counters(ops)[c("decisions_total", 1, result="denied", reason=reason)[0]] == 1


def test_cache_hits_are_counted_and_cost_no_registry_request(world: World) -> None:
    world.admit(world.config(), pod(world.signed.by_digest, world.unsigned.by_digest))
    first = read_metrics(world.metrics)
    world.fresh_metrics()
    # Other config bytes: the fast path does not answer, the verdict cache does.
    mark = world.registry.mark()
    world.admit(world.config(comment="reworded"), pod(world.signed.by_digest, world.unsigned.by_digest))
    ops = read_metrics(world.metrics)
    assert added(counters(first), counters(ops)) == dict([
        c("decisions_total", 1, result="denied", reason="no-signature"),
        c("images_total", 1, result="pass", reason="verified", mode="enforce"),
        c("images_total", 1, result="fail", reason="no-signature", mode="enforce"),
        c("cache_total", 2, result="hit"),
    ])
    assert _sum_registry(ops) == _sum_registry(first), "no registry request added"
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
    first = read_metrics(world.metrics)
    world.fresh_metrics()
    run = world.admit(config, pod(image, image))
    assert run.decision_log["cache"].get("fast") is True, "control: the fast path answered"
    ops = read_metrics(world.metrics)
    expected = dict([c("decisions_total", 1, result="allowed", reason=reason), c("cache_total", 1, result="hit")])
    assert {k: v for k, v in added(counters(first), counters(ops)).items() if k[0] != "signgate_images_total"} == expected
    assert histograms(ops)["allowed"]["count"] == histograms(first)["allowed"]["count"] + 1


def test_the_fast_path_counts_images_like_the_full_path(world: World) -> None:
    config = world.config()
    world.admit(config, pod(world.signed.reference, world.signed.reference))
    first = counters(read_metrics(world.metrics))
    full = {k: v for k, v in first.items() if k[0] == "signgate_images_total"}
    world.fresh_metrics()
    run = world.admit(config, pod(world.signed.reference, world.signed.reference))
    assert run.decision_log["cache"].get("fast") is True, "control: the fast path answered"
    fast = {k: v for k, v in added(first, counters(read_metrics(world.metrics))).items() if k[0] == "signgate_images_total"}
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


def test_without_a_cache_directory_no_metrics_are_written(world: World) -> None:
    # Totals need a place that outlives the process; README says so.
    run = run_request(world.config(), pod(world.signed.reference), env={"METRICS_PATH": str(world.metrics)})
    assert run.allowed
    assert not world.metrics.exists()


@pytest.mark.parametrize("path", ["fast", "full", "error"])
def test_an_unusable_totals_directory_does_not_change_the_answer(world: World, path: str) -> None:
    config = world.config() if path != "error" else world.tmp / "missing.yaml"
    if path == "fast":
        world.admit(config, pod(world.signed.reference))
    shutil.rmtree(world.cache / "m", ignore_errors=True)
    world.cache.mkdir(exist_ok=True)
    (world.cache / "m").write_text("a file where the totals' directory goes")
    world.fresh_metrics()
    run = run_request(config, pod(world.signed.reference), env=world.env())
    assert run.returncode == 0 and run.allowed is (path != "error")
    assert (run.decision_log.get("cache", {}).get("fast") is True) is (path == "fast")
    assert not world.metrics.exists()


# ---- totals across runs, paths and processes ------------------------------------------------------


def test_totals_accumulate_across_runs_and_paths(world: World) -> None:
    """shell-operator keeps only the last run's operations; each run shows the totals so far."""
    config = world.config()
    shown: list[list[dict[str, Any]]] = []
    runs = [
        lambda: world.admit(config, pod(world.signed.reference)),  # full path, verified
        lambda: world.admit(config, pod(world.signed.reference)),  # fast path
        lambda: world.admit(config, pod(world.unsigned.reference)),  # full path, denied
        lambda: run_contexts(config, None, raw_context=b"{not json", env=world.env()),  # error path
        lambda: world.admit(config, pod(world.signed.reference)),  # fast path again
    ]
    for run in runs:
        world.fresh_metrics()
        run()
        shown.append(read_metrics(world.metrics))
    for before, after in zip(shown, shown[1:]):
        added(totals(before), totals(after))  # every series set again, none smaller
    last = shown[-1]
    assert {k: v for k, v in counters(last).items() if k[0] == "signgate_decisions_total"} == dict([
        c("decisions_total", 3, result="allowed", reason="verified"),
        c("decisions_total", 1, result="denied", reason="no-signature"),
        c("decisions_total", 1, result="denied", reason="invalid-input"),
    ])
    assert counters(last)[c("cache_total", 2, result="hit")[0]] == 2
    histogram = histograms(last)
    assert histogram["allowed"]["count"] == 3 and histogram["denied"]["count"] == 1  # errors are not timed
    assert [histograms(ops)["allowed"]["count"] for ops in shown] == [1, 2, 2, 2, 3]


def test_the_verifier_service_in_process_and_fast_path_add_to_the_same_totals(world: World) -> None:
    directory = Path(tempfile.mkdtemp(prefix="sg-m-", dir="/tmp"))  # short enough for a socket address
    config = world.config()
    with VerifierService(directory) as service:
        def served() -> dict[str, str]:
            return {**world.env(), "SIGNGATE_VERIFIER_SOCKET": str(service.socket)}

        world.fresh_metrics()
        first = world.admit(config, pod(world.signed.reference))  # in-process: no socket
        world.fresh_metrics()
        second = run_request(config, pod(world.unsigned.reference), env=served())  # a service worker
        second_ops = read_metrics(world.metrics)
        world.fresh_metrics()
        third = run_request(config, pod(world.signed.reference), env=served())  # the fast path
    shutil.rmtree(directory)
    assert not any("verifier service" in e.get("msg", "") for e in second.logs), "control: the service answered"
    assert first.allowed and not second.allowed and third.decision_log["cache"].get("fast") is True
    last = read_metrics(world.metrics)
    added(totals(second_ops), totals(last))
    assert {k: v for k, v in counters(last).items() if k[0] == "signgate_decisions_total"} == dict([
        c("decisions_total", 2, result="allowed", reason="verified"),
        c("decisions_total", 1, result="denied", reason="no-signature"),
    ])
    assert histograms(last)["allowed"]["count"] == 2 and histograms(last)["denied"]["count"] == 1


def test_the_fast_path_records_without_importing_anything_new(world: World) -> None:
    config = world.config()
    world.admit(config, pod(world.signed.reference))

    def imported(env: dict[str, str]) -> set[str]:
        run = run_request(config, pod(world.signed.reference), env={**env, "PYTHONPROFILEIMPORTTIME": "1"})
        assert run.decision_log["cache"].get("fast") is True
        return {line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")}

    without = imported({"SIGNGATE_CACHE_DIR": str(world.cache)})
    world.fresh_metrics()
    recording = imported(world.env())
    assert counters(read_metrics(world.metrics)), "control: this run recorded metrics"
    assert "signgate.fastpath" in without, "control: import times were recorded"
    assert recording - without <= {"fcntl"}  # fastpath already takes its locks with fcntl
    assert "signgate.metrics" not in recording and "signgate.hook" not in recording


def _json_config(world: World, **webhook: Any) -> Path:
    """A JSON configuration (as the chart renders it): the fast path reads its deadline too."""
    path = world.tmp / f"config-{time.monotonic_ns()}.json"
    path.write_text(json.dumps({
        "keys": {"default": str(world.key_path)},
        "registries": {"insecure": [world.registry.host]},
        "policy": [{"images": "**"}],
        "webhook": webhook,
    }))
    return path


def test_200_concurrent_hook_processes_lose_no_increment(world: World) -> None:
    # A generous deadline: the runs must not give up waiting for each other on a busy machine.
    config = _json_config(world, timeoutSeconds=30, deadlineSeconds=29)
    world.admit(config, pod(world.signed.reference))
    request = [{"binding": BINDING, "type": "Validating", "review": {"request": pod(world.signed.reference)}}]
    processes = []
    for n in range(200):
        directory = world.tmp / f"run-{n}"
        directory.mkdir()
        (directory / "context.json").write_text(json.dumps(request))
        (directory / "response.json").write_text("")
        env = hook_env(config, {
            "BINDING_CONTEXT_PATH": str(directory / "context.json"),
            "VALIDATING_RESPONSE_PATH": str(directory / "response.json"),
            "METRICS_PATH": str(directory / "metrics.jsonl"),
            "SIGNGATE_CACHE_DIR": str(world.cache),
        })
        processes.append((directory, subprocess.Popen([str(HOOK)], cwd=HOOK.parent, env=env,
                                                      stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)))
    shown = []
    for directory, process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
        assert json.loads((directory / "response.json").read_text()) == {"allowed": True}
        assert b'"fast": true' in stderr, "control: the fast path answered"
        shown.append(read_metrics(directory / "metrics.jsonl"))
    decisions = sorted(counters(ops)[c("decisions_total", 0, result="allowed", reason="verified")[0]] for ops in shown)
    # Each run added its decision under the lock and saw the total it made: 2 ... 201, each once.
    assert decisions == list(range(2, 202))
    last = max(shown, key=lambda ops: counters(ops)[c("decisions_total", 0, result="allowed", reason="verified")[0]])
    assert histograms(last)["allowed"]["count"] == 201
    assert counters(last)[c("images_total", 0, result="pass", reason="verified", mode="enforce")[0]] == 201


RECORDER = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
from signgate import totals
os.read(0, 1)  # every process is started and waits here: they all record at once
ops = totals.record_metrics(sys.argv[2], [
    ("signgate_decisions_total", {"result": "allowed", "reason": "verified"}, 1),
    ("signgate_images_total", {"result": "pass", "reason": "verified", "mode": "enforce"}, 3),
], [("signgate_verification_seconds", {"result": "allowed"}, 0.03)], time.monotonic() + 600)
sys.exit(0 if ops is not None and totals.append_metric_operations(sys.argv[3], ops) else 1)
"""


def test_200_processes_released_at_once_lose_no_increment(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    processes = []
    for n in range(200):
        processes.append(subprocess.Popen(
            [sys.executable, "-c", RECORDER, str(LIB), str(cache), str(tmp_path / f"metrics-{n}.jsonl")],
            stdin=subprocess.PIPE, stderr=subprocess.PIPE,
        ))
    for process in processes:
        process.stdin.write(b"go")
        process.stdin.close()
    for process in processes:
        assert process.wait(timeout=600) == 0, process.stderr.read()
    shown = [read_metrics(tmp_path / f"metrics-{n}.jsonl") for n in range(200)]
    key = c("decisions_total", 0, result="allowed", reason="verified")[0]
    assert sorted(counters(ops)[key] for ops in shown) == list(range(1, 201))
    final = totals_store._load_totals(str(cache / "m" / "totals.json"))
    assert final["counters"]["signgate_images_total"][(("mode", "enforce"), ("reason", "verified"), ("result", "pass"))][1] == 600
    _, buckets, total, count = final["histograms"][HISTOGRAM][(("result", "allowed"),)]
    assert count == 200 and buckets[2] == 200 and total == pytest.approx(6.0)  # 0.03 s: the 0.05 bucket


@pytest.mark.parametrize("path", ["fast", "full"])
def test_a_run_that_cannot_take_the_totals_lock_answers_all_the_same(world: World, path: str) -> None:
    """It gives up at its deadline and writes no metrics: shell-operator keeps the previous ones."""
    import fcntl

    config = _json_config(world, timeoutSeconds=8, deadlineSeconds=4)
    world.admit(config, pod(world.signed.reference))
    before = read_metrics(world.metrics)
    if path == "full":
        config = _json_config(world, timeoutSeconds=8, deadlineSeconds=4.5)  # other bytes: no fast entry
    fd = os.open(world.cache / "m" / "totals.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        world.fresh_metrics()
        run = world.admit(config, pod(world.signed.reference))
        assert run.allowed and (run.decision_log["cache"].get("fast") is True) is (path == "fast")
        assert not world.metrics.exists()
    finally:
        os.close(fd)
    world.fresh_metrics()
    world.admit(config, pod(world.signed.reference))
    # The run that gave up is not counted; the next one counts itself on the totals before it.
    assert added(counters(before), counters(read_metrics(world.metrics))) == {
        c("decisions_total", 1, result="allowed", reason="verified")[0]: 1,
        c("images_total", 1, result="pass", reason="verified", mode="enforce")[0]: 1,
        c("cache_total", 1, result="hit")[0]: 1,
    }


# ---- the totals file --------------------------------------------------------------------------------


ONE_DECISION = [("signgate_decisions_total", {"result": "denied", "reason": "no-signature"}, 1)]


def record(cache: Path, counts: list[Any] = ONE_DECISION, observations: list[Any] = ()) -> list[dict[str, Any]] | None:
    return totals_store.record_metrics(str(cache), list(counts), list(observations), time.monotonic() + 60)


def decision_totals(ops: list[dict[str, Any]] | None) -> dict[Series, float]:
    assert ops is not None
    return {key: value for key, value in totals(ops).items() if key[0] == "signgate_decisions_total"}


def _garbage(state: Path) -> None:
    state.write_bytes(b"\x00{not json")


def _other_format(state: Path) -> None:
    state.write_text(json.dumps({"format": 99, "counters": [["signgate_decisions_total", {"result": "denied", "reason": "no-signature"}, 5]]}))


def _fifo(state: Path) -> None:
    state.unlink()
    os.mkfifo(state)


def _symlink(state: Path) -> None:
    outside = state.parent.parent / "outside.json"
    outside.write_text(state.read_text())
    state.unlink()
    state.symlink_to(outside)


@pytest.mark.parametrize("corrupt", [_garbage, _other_format, _fifo, _symlink], ids=["garbage", "other-format", "fifo", "symlink"])
def test_an_unreadable_totals_file_starts_the_totals_again(tmp_path: Path, corrupt: Callable[[Path], None]) -> None:
    cache = tmp_path / "cache"
    record(cache)
    state = cache / "m" / "totals.json"
    corrupt(state)
    outside = tmp_path / "outside.json"
    kept = outside.read_bytes() if outside.exists() else None
    # Prometheus reads the drop as a counter reset, as after a restart; never a hang or a crash.
    assert decision_totals(record(cache)) == {c("decisions_total", 1, result="denied", reason="no-signature")[0]: 1}
    assert state.is_file() and not state.is_symlink()
    assert outside.read_bytes() == kept if kept is not None else not outside.exists()
    assert decision_totals(record(cache)) == {c("decisions_total", 2, result="denied", reason="no-signature")[0]: 2}


def test_malformed_series_are_dropped_and_the_others_kept(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    record(cache, observations=[(HISTOGRAM, {"result": "denied"}, 0.2)])
    state = cache / "m" / "totals.json"
    data = json.loads(state.read_text())
    good = data["counters"][0]
    data["counters"] += [
        ["signgate_decisions_total", {"result": "allowed", "reason": "verified"}, 1.5],
        ["signgate_decisions_total", {"result": "allowed", "reason": "static"}, True],
        ["signgate_decisions_total", {"result": "allowed", "reason": "x"}, -1],
        ["signgate_decisions_total", {"result": 1}, 1],
        ["signgate_decisions_total", {"__name__": "x"}, 1],
        ["other_metric", {}, 1],
        "not a series",
    ]
    histogram = data["histograms"][0]
    data["histograms"] += [
        [HISTOGRAM, {"result": "allowed"}, histogram[2], histogram[3], 0.2, 2],  # count is not the buckets' sum
        [HISTOGRAM, {"result": "error"}, histogram[2], histogram[3][:-1], 0.2, 1],
    ]
    state.write_text(json.dumps(data))
    ops = record(cache)
    assert decision_totals(ops) == {("signgate_decisions_total", tuple(sorted(good[1].items()))): 2}
    assert set(histograms(ops)) == {"denied"}


def test_another_bucket_layout_starts_the_histogram_again_and_keeps_the_counters(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    record(cache, observations=[(HISTOGRAM, {"result": "denied"}, 0.2)])
    state = cache / "m" / "totals.json"
    data = json.loads(state.read_text())
    data["histograms"][0][2] = [0.1, 1]
    data["histograms"][0][3] = [0, 1, 0]
    state.write_text(json.dumps(data))
    ops = record(cache, observations=[(HISTOGRAM, {"result": "denied"}, 3)])
    assert histograms(ops)["denied"]["count"] == 1 and histograms(ops)["denied"]["sum"] == 3
    assert decision_totals(ops) == {c("decisions_total", 2, result="denied", reason="no-signature")[0]: 2}


def test_the_histogram_is_a_classic_prometheus_one(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    for seconds in (0.004, 0.01, 0.3, 7, 60):
        ops = record(cache, [], [(HISTOGRAM, {"result": "allowed"}, seconds)])
    histogram = histograms(ops)["allowed"]
    assert histogram["buckets"] == {"0.01": 2, "0.025": 2, "0.05": 2, "0.1": 2, "0.25": 2, "0.5": 3, "1": 3, "2": 3, "5": 3,
                                    "10": 4, "+Inf": 5}
    assert histogram["count"] == 5 and histogram["sum"] == pytest.approx(67.314)


def test_label_combinations_past_the_limit_are_counted_as_other(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    hosts = [f"registry-{n}.example" for n in range(totals_store.MAX_SERIES_PER_METRIC + 50)]
    for host in hosts:
        ops = record(cache, [("signgate_registry_requests_total", {"registry": host, "status": "200"}, 2)])
    by_registry = _sum_registry(ops)
    assert len(by_registry) == totals_store.MAX_SERIES_PER_METRIC + 1
    assert by_registry[("other", "other")] == 100
    assert sum(by_registry.values()) == 2 * len(hosts)
    assert by_registry[(hosts[0], "200")] == 2, "series seen before the limit keep counting"


def _directory(path: Path) -> None:
    path.mkdir()


def _lock_fifo(path: Path) -> None:
    os.mkfifo(path)


def _lock_symlink(path: Path) -> None:
    path.symlink_to(path.parent.parent / "elsewhere.lock")


@pytest.mark.parametrize("lock", [_directory, _lock_fifo, _lock_symlink], ids=["directory", "fifo", "symlink"])
def test_anything_but_a_regular_lock_file_means_no_metrics(tmp_path: Path, lock: Callable[[Path], None]) -> None:
    cache = tmp_path / "cache"
    (cache / "m").mkdir(parents=True)
    lock(cache / "m" / "totals.lock")
    assert record(cache) is None
    assert not (cache / "m" / "totals.json").exists() and not (tmp_path / "elsewhere.lock").exists()


def test_a_symlink_in_place_of_the_temporary_file_is_not_followed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    record(cache)
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (cache / "m" / "totals.json.tmp").symlink_to(victim)
    assert decision_totals(record(cache)) == {c("decisions_total", 2, result="denied", reason="no-signature")[0]: 2}
    assert victim.read_text() == "untouched"


def test_an_unusable_cache_directory_means_no_metrics(tmp_path: Path) -> None:
    (tmp_path / "cache").write_text("a file, not a directory")
    assert record(tmp_path / "cache") is None
