"""The pod-spec table, evaluated by jsonpath-ng as the reference.

The hook walks POD_SPEC_PATHS by hand because importing jsonpath-ng costs tens of milliseconds
in every admission process. These tests make sure the walk finds exactly what jsonpath-ng finds,
image for image and location for location, for every kind and every container list.
"""

from __future__ import annotations

import pytest
from jsonpath_ng import parse

from support.contract import pod_spec, workload
from signgate.admission import CONTAINER_LISTS, POD_SPEC_PATHS, container_images


def jsonpath_images(kind: str, obj: dict) -> list[tuple[str, str]]:
    found = []
    for list_name in CONTAINER_LISTS:
        path = ".".join(part for part in (POD_SPEC_PATHS[kind], list_name) if part)  # "" is the object itself
        for match in parse(f"$.{path}[*].image").find(obj):
            parts = [p[1:-1] if p.startswith("[") else p for p in str(match.full_path).split(".")]
            found.append((match.value, "/" + "/".join(parts)))
    return found


@pytest.mark.parametrize("kind", sorted(POD_SPEC_PATHS))
def test_walk_finds_what_jsonpath_finds_in_every_kind_and_list(kind: str) -> None:
    obj = workload(kind, pod_spec(["r.io/a:1", "r.io/b:2"], init=["r.io/i:1"], ephemeral=["r.io/d:1"]))
    walked = [(c.image, c.pointer) for c in container_images(kind, obj)]
    assert walked == jsonpath_images(kind, obj)
    assert len(walked) == (1 if kind == "EphemeralContainers" else 4)  # that kind has only the one list


@pytest.mark.parametrize("kind", sorted(POD_SPEC_PATHS))
def test_walk_and_jsonpath_agree_on_an_empty_pod_spec(kind: str) -> None:
    obj = workload(kind, {})
    assert [(c.image, c.pointer) for c in container_images(kind, obj)] == jsonpath_images(kind, obj) == []
