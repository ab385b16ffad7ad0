"""Shedding: answer at once when an admission can no longer be verified in time.

The API server stops waiting after timeoutSeconds, and with `failurePolicy: Ignore` a late answer
is an unverified admission; with `Fail` it is a denial without a reason. When too little of the
deadline is left to verify, or the machine is too loaded for this process to verify in time, the
honest answer is an immediate denial that names each image it could not verify and says why:
"not verified within 8 s: signgate is overloaded (...)".

Two places shed. hook.run_admission (via `reason_to_shed`) does it for every configuration, with
the policy applied: static rules and warn modes still decide. And `answer` here does it before the
library is imported at all, with the standard library only, because on an overloaded machine
importing the library is itself what makes the answer late (200 hook processes on two cores each
get a hundredth of a CPU). It does so only when that gives the very answer the full path would:
a JSON configuration (as the chart renders it) in enforce mode whose every rule verifies
signatures (no `action: allow`, no warn mode, no `unmatchedImages: allow`). There every image is
admitted only if verified, so with no time to verify, every image is denied. Anything else falls
through to the full path.

Standard library only (what the fast path has already imported).
"""

from __future__ import annotations

import json
import os
import sys
import time

from .fastpath import read_regular  # already loaded: the hook tries fastpath.py first
from .podspec import config_path, is_checked, pod_spec_kind, walk_containers

MAX_CONFIG_BYTES = 1024 * 1024
# Kubernetes caps a webhook's timeoutSeconds at 30; 10 is its default and shell-operator's.
MAX_WEBHOOK_TIMEOUT = 30.0
DEFAULT_WEBHOOK_TIMEOUT = 10.0
MAX_CONTEXT_BYTES = 8 * 1024 * 1024
MAX_IMAGES = 100  # the default limits.maxImagesPerRequest; past it the full path says so itself
# CPU seconds a cold verification costs a hook process by itself: importing the library,
# `requests` and `cryptography` (bench/RESULTS.md: ~250 ms over the floor on an idle machine).
IN_PROCESS_VERIFY_CPU = 0.3
# A process that got less than this share of a CPU while it wanted one runs on an overloaded
# machine: more than twenty runnable processes per core. Above it, a share measured over a few
# tens of milliseconds says too little to deny on.
OVERLOADED_SHARE = 0.05
# Less time than this spent running or waiting to run says nothing about the machine's load.
MIN_RUNNABLE_NS = 50_000_000
# How far ahead a share measured now is trusted: a burst of hook processes passes in seconds, and
# a process with more time than this left may well get more CPU later than it gets now.
PREDICTION_HORIZON = 4.0


def cpu_share() -> float | None:
    """The share of a CPU this process's main thread got while it was runnable: its time on a CPU
    over that plus its time waiting in a run queue (Linux's /proc/self/schedstat). Time spent
    blocked (waiting for the verifier service, say) counts in neither. None when the kernel does
    not say, or too little time has passed to tell."""
    try:
        with open("/proc/self/schedstat", "rb") as handle:
            running, waiting = (int(field) for field in handle.read().split()[:2])
    except (OSError, ValueError):
        return None
    if running + waiting < MIN_RUNNABLE_NS:
        return None
    return running / (running + waiting)


def shed_margin(deadline_seconds: float) -> float:
    """Less than this left of the deadline is too little to start verifying: shed instead.

    One second, or a quarter of a short deadline (so that a 1-second deadline still verifies).
    """
    return min(1.0, 0.25 * deadline_seconds)


def reason_to_shed(deadline_seconds: float, left: float, fallback: object, waited: float, verify_cpu: float) -> tuple[str, str] | None:
    """Whether to answer without verifying, and why: (reason, text), or None to verify.

    - Less than shed_margin() left of the deadline: verifying could not finish.
    - The verifier service had the request but no worker for it in time (`fallback.overloaded`):
      shed with twice the margin left, since verifying here as well would slow every other
      admission on this overloaded machine down.
    - This process must pay `verify_cpu` seconds of CPU before it can verify, and the share of a
      CPU it gets on this overloaded machine (cpu_share) says that will not fit in what is left
      (looking at most PREDICTION_HORIZON ahead).

    `fallback` (a relay.Fallback or None) says why the verifier service did not answer; its text
    explains a shed. `waited` is how long ago the request started.
    """
    margin = shed_margin(deadline_seconds)
    need = margin * (2 if getattr(fallback, "overloaded", False) else 1)
    cost = 0.0
    share = cpu_share() if verify_cpu > 0 else None
    if share is not None and share < OVERLOADED_SHARE:
        cost = verify_cpu / max(share, 0.001)
        need = max(need, margin + min(cost, PREDICTION_HORIZON))
    if left >= need:
        return None
    if fallback is not None:
        return str(getattr(fallback, "reason")), str(getattr(fallback, "text"))
    if cost > 0 and left >= margin:
        return "overloaded", f"signgate is overloaded (verifying would take about {cost:.1f} s; {left:.1f} s of the deadline are left)"
    return "overloaded", f"signgate is overloaded (the request waited {waited:.1f} s before it could be verified)"


def answer(environ: dict[str, str] | os._Environ[str], started: float, fallback: object = None) -> bool:
    """Shed this call here, before the library is imported, when that is safe and needed: True when
    the response is written. False lets the full path decide (and shed, if it must)."""
    try:
        found = _sheddable(environ)
        if found is None:
            return False
        deadline, request, containers = found
        waited = time.monotonic() - started
        why = reason_to_shed(deadline, deadline - waited, fallback, waited, IN_PROCESS_VERIFY_CPU)
        if why is None:
            return False
        _respond(environ, request, containers, deadline, why, started)
        return True
    except Exception:  # anything unexpected: the full path decides, and says why if it must
        return False


def _sheddable(environ: dict[str, str] | os._Environ[str]) -> tuple[float, dict, list[tuple[str, str, str, str]]] | None:
    """(deadline, request, containers) when every image of this request needs a signature under a
    JSON enforce-mode configuration of verify rules only; None otherwise."""
    # A regular file only: a FIFO in its place must not block the hook (issue 13, finding 7).
    raw = read_regular(config_path(environ), MAX_CONFIG_BYTES)
    config = json.loads(raw)
    if len(raw) > MAX_CONFIG_BYTES or not isinstance(config, dict):
        return None
    rules = config.get("policy")
    if (
        config.get("mode", "enforce") != "enforce"
        or config.get("unmatchedImages", "deny") != "deny"
        or not isinstance(rules, list)
        or not all(isinstance(r, dict) and r.get("action", "verify") == "verify" and r.get("mode") in (None, "enforce") for r in rules)
    ):
        return None
    _, deadline = webhook_times(environ)
    with open(environ["BINDING_CONTEXT_PATH"], "rb") as handle:
        raw_context = handle.read(MAX_CONTEXT_BYTES + 1)
    if len(raw_context) > MAX_CONTEXT_BYTES:
        return None
    contexts = json.loads(raw_context)
    if isinstance(contexts, dict):
        contexts = [contexts]
    validating = [c for c in contexts if isinstance(c, dict) and c.get("type") == "Validating"]
    if len(contexts) != 1 or len(validating) != 1:
        return None  # a mutating call, or an unexpected shape: the full path
    review = validating[0].get("review")
    request = review.get("request") if isinstance(review, dict) else None
    if not isinstance(request, dict) or not is_checked(request.get("operation")):
        return None
    kind = pod_spec_kind(request)
    if kind is None or not isinstance(request.get("object"), dict):
        return None
    containers = walk_containers(kind, request["object"])
    if not containers or len(containers) > MAX_IMAGES or any(not isinstance(image, str) or not image for _, _, image, _ in containers):
        return None
    return deadline, request, containers


LABELS = {"initContainers": "init container", "ephemeralContainers": "ephemeral container"}


def _label(list_name: str, name: str, pointer: str) -> str:
    kind = LABELS.get(list_name, "container")
    return f'{kind} "{name}"' if name else f"{kind} #{pointer.rsplit('/', 2)[-2]}"


def _quote(image: str) -> str:
    return f'"{image if len(image) <= 200 else image[:200] + "…"}"'


def _respond(
    environ: dict[str, str] | os._Environ[str],
    request: dict,
    containers: list[tuple[str, str, str, str]],
    deadline: float,
    why: tuple[str, str],
    started: float,
) -> None:
    reason, text = why
    verdict = f"not verified within {deadline:g} s: {text}"
    lines = [f"{_label(list_name, name, pointer)} image {_quote(image)}: {verdict}" for list_name, name, image, pointer in containers]
    response = {"allowed": False, "message": "signgate: " + "; ".join(lines)}
    path = environ.get("VALIDATING_RESPONSE_PATH") or environ.get("ADMISSION_RESPONSE_PATH")
    if not path:
        raise OSError("no response path")
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(response, handle)
    # The answer is written; what follows is bookkeeping, as on the full path.
    try:
        _log(request, containers, reason, verdict, started)
        _metrics(environ.get("METRICS_PATH"), len(containers), reason, started)
    except Exception:
        pass


def _log(request: dict, containers: list[tuple[str, str, str, str]], reason: str, verdict: str, started: float) -> None:
    kind = request.get("kind") if isinstance(request.get("kind"), dict) else {}
    obj = request.get("object") if isinstance(request.get("object"), dict) else {}
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    entry = {
        "level": "warn",  # shell-operator knows "warn", not "warning"
        "msg": "signgate decision",
        "uid": request.get("uid", ""),
        "namespace": request.get("namespace", ""),
        "kind": kind.get("kind", ""),
        "name": request.get("name") or metadata.get("name") or metadata.get("generateName") or "",
        "operation": request.get("operation", ""),
        "verdict": "denied",
        "reasons": [reason],
        "images": [
            {"container": name, "list": list_name, "image": image, "digest": None, "rule": None, "mode": "enforce",
             "verdict": "fail", "reason": reason, "keys": [], "message": verdict}
            for list_name, name, image, _ in containers
        ],
        "shed": True,
        "duration_ms": int((time.monotonic() - started) * 1000),
    }
    sys.stderr.write(json.dumps(entry, default=str) + "\n")


def _metrics(path: str | None, images: int, reason: str, started: float) -> None:
    if not path:
        return
    lines = [
        {"name": "signgate_decisions_total", "action": "add", "value": 1, "labels": {"result": "denied", "reason": reason}},
        {"name": "signgate_images_total", "action": "add", "value": images, "labels": {"result": "fail", "reason": reason, "mode": "enforce"}},
        {
            "name": "signgate_verification_seconds",
            "action": "observe",
            "value": round(time.monotonic() - started, 6),
            "buckets": [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
            "labels": {"result": "denied"},
        },
    ]
    with open(path, "a", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line, separators=(",", ":")) + "\n")


def webhook_times(environ: dict[str, str] | os._Environ[str]) -> tuple[float, float]:
    """The webhook's timeoutSeconds and signgate's deadlineSeconds, when the configuration is JSON
    (as the chart renders it).

    A YAML configuration is not parsed here (that would import yaml): it gets Kubernetes' default
    timeout of 10 s and the default deadline. With a longer timeout, the hook may give up on a
    slow worker early and decide again itself; with a shorter one, it may wait too long.
    """
    default = (DEFAULT_WEBHOOK_TIMEOUT, max(DEFAULT_WEBHOOK_TIMEOUT * 0.5, DEFAULT_WEBHOOK_TIMEOUT - 2.0))
    try:
        raw = read_regular(config_path(environ), MAX_CONFIG_BYTES)  # a FIFO must not block the hook
        webhook = json.loads(raw).get("webhook") or {}
        timeout = float(webhook.get("timeoutSeconds", DEFAULT_WEBHOOK_TIMEOUT))
        deadline = float(webhook.get("deadlineSeconds", max(timeout * 0.5, timeout - 2.0)))
    except (OSError, ValueError, TypeError, AttributeError, RecursionError, OverflowError):
        return default
    # Comparisons are False for NaN, so a NaN falls back to the defaults as well.
    if not (0 < timeout <= MAX_WEBHOOK_TIMEOUT and 0 < deadline < timeout):
        return default
    return timeout, deadline
