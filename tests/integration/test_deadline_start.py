"""The deadline counts from when the request reached the pod, and an overloaded pod sheds early.

shell-operator writes the binding context file just before it starts the hook. On a loaded
machine (200 admissions at once on two cores) the interpreter may start seconds later; counting
the deadline from the interpreter's start gave those seconds away, and answers arrived after the
API server had stopped waiting (with failurePolicy Ignore, a late answer is an unverified
admission). So the deadline counts from the file's modification time (fastpath.request_started),
and a request with too little of its deadline left is answered at once: every image that needs a
signature is denied as "not verified within N s: signgate is overloaded", naming it, without
contacting a registry. Static rules, warn mode and the fast path's cached passes still apply.

Everything goes through the hook's contract: the hook runs as a subprocess, with the binding
context's modification time set as a test of this kind needs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from support.contract import BINDING, HOOK, HookRun, hook_env, request_for
from support.hostile import write_config
from support.oci import RegistryHTTP, push_image
from support.registry import Registry
from support.service import VerifierService
from support.signer import TestKey, sign_legacy


@pytest.fixture(scope="module")
def images(registry: Registry, keys: dict[str, TestKey]) -> dict[str, str]:
    client = RegistryHTTP(registry)
    prefix = f"t/deadline-start-{time.monotonic_ns()}"
    signed = push_image(client, f"{prefix}/signed", "v1", content=b"signed")
    sign_legacy(client, signed.repo, signed.digest, keys["ecdsa-p256"])
    other = push_image(client, f"{prefix}/other", "v1", content=b"other")
    sign_legacy(client, other.repo, other.digest, keys["ecdsa-p256"])
    client.close()
    return {"signed": signed.reference, "other": other.reference, "host": registry.host}


def config_for(directory: Path, key: TestKey, host: str, **top: Any) -> Path:
    top.setdefault("registries", {"insecure": [host]})
    return write_config(directory / f"config-{time.monotonic_ns()}.json", key, **top)


def run_aged(config: Path, request: dict[str, Any], age: float, env: dict[str, str] | None = None) -> HookRun:
    """Run the hook on a binding context whose modification time lies `age` seconds in the past
    (negative: in the future)."""
    with tempfile.TemporaryDirectory(prefix="signgate-hook-") as tmp:
        context = Path(tmp) / "context.json"
        response = Path(tmp) / "response.json"
        context.write_text(json.dumps([{"binding": BINDING, "type": "Validating", "review": {"request": request}}]))
        response.write_text("")
        written = time.time() - age
        os.utime(context, (written, written))
        environment = hook_env(config, {"BINDING_CONTEXT_PATH": str(context), "VALIDATING_RESPONSE_PATH": str(response), **(env or {})})
        completed = subprocess.run([str(HOOK)], cwd=HOOK.parent, env=environment, capture_output=True, text=True, timeout=60)
        raw = response.read_text()
    run = HookRun(completed.returncode, raw, completed.stdout, completed.stderr)
    run.response = json.loads(raw) if raw.strip() else None
    run.logs = [json.loads(line) for line in completed.stderr.splitlines() if line.startswith("{")]
    return run


def test_a_request_that_arrived_past_its_deadline_is_denied_at_once_naming_the_image(images, registry, keys, tmp_path) -> None:
    config = config_for(tmp_path, keys["ecdsa-p256"], images["host"])  # timeoutSeconds 10, deadline 8 s
    mark = registry.mark()
    run = run_aged(config, request_for("Pod", [images["signed"]]), age=60)
    assert registry.count_requests(mark) == 0  # at once: nothing was fetched
    assert run.returncode == 0 and not run.allowed, run.stderr
    assert run.message.startswith(f'signgate: container "c0" image "{images["signed"]}": not verified within 8 s: signgate is overloaded'), run.message
    assert "the request waited 60." in run.message
    assert run.decision_log["reasons"] == ["overloaded"]


def test_the_same_request_just_arrived_is_verified(images, keys, tmp_path) -> None:
    # The control: the same configuration and image, a fresh binding context.
    run = run_aged(config_for(tmp_path, keys["ecdsa-p256"], images["host"]), request_for("Pod", [images["signed"]]), age=0)
    assert run.allowed and run.decision_log["images"][0]["reason"] == "verified", run.stderr


def test_with_the_verifier_service_a_late_request_is_not_even_handed_over(images, registry, keys, tmp_path) -> None:
    directory = Path(tempfile.mkdtemp(prefix="sg-late-", dir="/tmp"))
    config = config_for(tmp_path, keys["ecdsa-p256"], images["host"])
    with VerifierService(directory) as service:
        mark = registry.mark()
        run = run_aged(config, request_for("Pod", [images["signed"]]), age=60, env={"SIGNGATE_VERIFIER_SOCKET": str(service.socket)})
        assert registry.count_requests(mark) == 0
    assert not run.allowed and "not verified within 8 s: signgate is overloaded" in run.message, run.stderr
    assert not any("verifier service" in e.get("msg", "") for e in run.logs), run.stderr


@pytest.mark.parametrize(
    "age",
    [-3600.0, 86400.0],
    ids=["modification-time-an-hour-in-the-future", "modification-time-a-day-old-is-not-shell-operators"],
)
def test_a_modification_time_that_cannot_be_the_requests_start_is_ignored(age, images, keys, tmp_path) -> None:
    run = run_aged(config_for(tmp_path, keys["ecdsa-p256"], images["host"]), request_for("Pod", [images["signed"]]), age=age)
    assert run.allowed and run.decision_log["images"][0]["reason"] == "verified", run.stderr


def test_shedding_keeps_static_rules_and_names_only_what_needed_a_signature(images, keys, tmp_path) -> None:
    config = config_for(
        tmp_path, keys["ecdsa-p256"], images["host"],
        policy=[{"images": "registry.example.com/allowed/**", "action": "allow"}, {"images": f"{images['host']}/**"}],
    )
    run = run_aged(config, request_for("Pod", ["registry.example.com/allowed/tool:v1", images["signed"]]), age=60)
    assert not run.allowed
    assert run.message.startswith(f'signgate: container "c1" image "{images["signed"]}": not verified within 8 s: signgate is overloaded')
    assert '"c0"' not in run.message
    assert [(i["container"], i["verdict"], i["reason"]) for i in run.decision_log["images"]] == [
        ("c0", "pass", "allowed-by-rule"),
        ("c1", "fail", "overloaded"),
    ]


def test_in_warn_mode_a_shed_request_is_admitted_with_the_warning(images, keys, tmp_path) -> None:
    run = run_aged(config_for(tmp_path, keys["ecdsa-p256"], images["host"], mode="warn"), request_for("Pod", [images["signed"]]), age=60)
    assert run.allowed, run.stderr
    [warning] = run.warnings
    assert warning.startswith(f'signgate (warn mode) would deny: container "c0" image "{images["signed"]}": not verified within 8 s: signgate is overloaded')


def test_a_late_request_whose_images_all_passed_before_is_still_admitted_from_the_cache(images, keys, tmp_path) -> None:
    config = config_for(tmp_path, keys["ecdsa-p256"], images["host"])
    cache = {"SIGNGATE_CACHE_DIR": str(tmp_path / "cache")}
    first = run_aged(config, request_for("Pod", [images["other"]]), age=0, env=cache)
    assert first.allowed, first.stderr
    late = run_aged(config, request_for("Pod", [images["other"]]), age=60, env=cache)
    assert late.allowed and late.decision_log["cache"].get("fast") is True, late.stderr


def _normalised(run: HookRun) -> tuple[Any, list[Any]]:
    import re

    def numbers(text: str) -> str:
        return re.sub(r"\d+\.\d+ s", "N s", text)

    images = [
        {k: numbers(v) if isinstance(v, str) else v for k, v in image.items() if k in ("container", "list", "image", "verdict", "reason", "mode", "message")}
        for image in run.decision_log["images"]
    ]
    return {**run.response, "message": numbers(run.message)}, images


def test_the_early_shed_gives_the_answer_the_full_path_gives(images, keys, tmp_path) -> None:
    # The same policy, as JSON (shed before the library is imported, shed.py) and as YAML (which
    # only the full path reads): the same response and the same per-image log.
    import yaml

    policy = {"keys": {"default": str(keys["ecdsa-p256"].pub_path)}, "registries": {"insecure": [images["host"]]}, "policy": [{"images": "**"}]}
    as_json = tmp_path / "config.json"
    as_json.write_text(json.dumps(policy))
    as_yaml = tmp_path / "config.yaml"
    as_yaml.write_text(yaml.safe_dump(policy))
    request = request_for("Deployment", [images["signed"], images["other"]], init=["busybox:1"])
    early = run_aged(as_json, request, age=60)
    full = run_aged(as_yaml, request, age=60)
    assert early.decision_log.get("shed") is True and "shed" not in full.decision_log  # the two paths did run
    assert _normalised(early) == _normalised(full)
    assert early.message.count("signgate is overloaded") == 3


@pytest.mark.parametrize(
    "age, counted",
    [(0.5, True), (299.0, True), (301.0, False), (-5.0, False)],
    ids=["just-written", "within-MAX_QUEUE_SECONDS", "older-than-MAX_QUEUE_SECONDS", "in-the-future"],
)
def test_request_started_takes_the_modification_time_only_within_its_bounds(tmp_path, age, counted) -> None:
    from signgate.fastpath import MAX_QUEUE_SECONDS, request_started

    assert MAX_QUEUE_SECONDS == 300.0
    context = tmp_path / "context.json"
    context.write_text("[]")
    written = time.time() - age
    os.utime(context, (written, written))
    launched = time.monotonic()
    started = request_started({"BINDING_CONTEXT_PATH": str(context)}, launched)
    if counted:
        assert abs((launched - started) - age) < 0.5
    else:
        assert started == launched
    assert request_started({}, launched) == launched
    assert request_started({"BINDING_CONTEXT_PATH": str(tmp_path / "missing.json")}, launched) == launched


class _Fallback:
    def __init__(self, overloaded: bool) -> None:
        self.reason, self.text, self.overloaded = ("overloaded" if overloaded else "service-failed"), "why", overloaded


@pytest.mark.parametrize(
    "left, fallback, share, expected",
    [
        (7.0, None, None, None),
        (0.9, None, None, "overloaded"),  # under the 1-second margin of an 8-second deadline
        (1.5, _Fallback(True), None, "overloaded"),  # the service was busy: twice the margin
        (2.5, _Fallback(True), None, None),
        (0.9, _Fallback(False), None, "service-failed"),  # the service's reason explains the shed
        (1.5, _Fallback(False), None, None),
        (3.0, None, 0.2, None),  # a fifth of a CPU is not overload
        (3.0, None, 0.01, "overloaded"),  # 0.3 s of CPU at a hundredth: 30 s; 3 s are left
        (6.0, None, 0.01, None),  # ... but only 4 s ahead are trusted
    ],
    ids=[
        "time-enough", "under-the-margin", "busy-service-under-twice-the-margin", "busy-service-with-more-left",
        "failed-service-under-the-margin", "failed-service-with-time-left", "loaded-not-overloaded",
        "overloaded-and-too-little-left", "overloaded-with-more-than-the-horizon-left",
    ],
)
def test_reason_to_shed(monkeypatch, left, fallback, share, expected) -> None:
    from signgate import shed

    monkeypatch.setattr(shed, "cpu_share", lambda: share)
    why = shed.reason_to_shed(8.0, left, fallback, 8.0 - left, shed.IN_PROCESS_VERIFY_CPU)
    assert (why[0] if why else None) == expected
    if why and fallback is not None:
        assert why[1] == "why"


def test_a_short_deadline_still_verifies() -> None:
    from signgate.shed import shed_margin

    assert shed_margin(8.0) == 1.0 and shed_margin(1.0) == 0.25
