"""Digest pinning for the mutating binding: `name:tag` becomes `name:tag@sha256:<verified digest>`.

A validating webhook verifies what a tag points to at admission time; the kubelet pulls later,
when the tag may name another image. Pinning closes that gap by rewriting each verified tag
reference to the digest that was verified, keeping the tag for people reading the spec. It is
opt-in per rule (`pinDigest`), because rewriting specs fights GitOps tools (they see drift) and
immutable fields (a Job's template cannot change after creation). `pinScope: pods` (the default)
pins only Pods, which no GitOps tool owns directly; `workloads` pins pod templates too.

The validating call stays the enforcement point: it checks every image again, and for a pinned
reference the digest wins, so it verifies exactly what will run (cheaply, from the cache).
"""

from __future__ import annotations

import base64
import json
from typing import Any, Iterable


def pinned_reference(image: str, tag_defaulted: bool, digest: str) -> str:
    """The image string as written, with the digest appended (and `:latest` made explicit)."""
    return f"{image}:latest@{digest}" if tag_defaulted else f"{image}@{digest}"


def pin_operations(results: Iterable[Any], old_object: Any = None) -> list[dict[str, str]]:
    """JSON Patch operations for every verified, tag-only image whose rule pins digests.

    On UPDATE, an image that stands unchanged at the same place in `old_object` is left alone:
    rewriting it would restart containers (or roll a Deployment) on a metadata-only change, and
    a Job's pod template cannot change at all after creation.
    """
    operations = []
    for result in results:
        ref, rule, verdict = result.reference, result.rule, result.verdict
        if ref is None or rule is None or not rule.pin_digest or not verdict.passed:
            continue
        if ref.digest is not None or verdict.digest is None or not isinstance(result.container.image, str):
            continue  # already pinned (a tag plus digest keeps its digest), or nothing verified
        if old_object is not None and _at_pointer(old_object, result.container.pointer) == result.container.image:
            continue  # unchanged by this UPDATE
        operations.append(
            {
                "op": "replace",
                "path": result.container.pointer,
                "value": pinned_reference(result.container.image, ref.tag_defaulted, verdict.digest),
            }
        )
    return operations


def encode_patch(operations: list[dict[str, str]]) -> str:
    """shell-operator wants the JSON Patch base64-encoded, on one line."""
    return base64.b64encode(json.dumps(operations, separators=(",", ":")).encode()).decode()


def _at_pointer(document: Any, pointer: str) -> Any:
    """The value at an RFC 6901 pointer, or None when the path does not exist."""
    current = document
    for raw in pointer.lstrip("/").split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(current, dict):
            current = current.get(part)
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current
