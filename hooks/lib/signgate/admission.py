"""Where images live in the objects that reach the webhook.

One table maps each kind to the path of its pod spec; each pod spec has three container
lists. Every image is reported with its container, its list and its JSON Pointer, so that
messages can name the container and a mutating call can patch the exact location.

The table and the walk live in podspec.py (standard library only, for the fast path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .podspec import CONTAINER_LISTS, POD_SPEC_PATHS, pod_spec_kind, walk_containers  # noqa: F401  (re-exported)


@dataclass(frozen=True)
class ContainerImage:
    container: str  # container name ("" when the object names none)
    list_name: str  # containers, initContainers or ephemeralContainers
    image: Any  # as written in the object; may be malformed (not a string, empty)
    pointer: str  # RFC 6901 JSON Pointer to the image field within the object

    @property
    def label(self) -> str:
        kind = {"initContainers": "init container", "ephemeralContainers": "ephemeral container"}.get(
            self.list_name, "container"
        )
        return f'{kind} "{self.container}"' if self.container else f"{kind} #{self.pointer.rsplit('/', 2)[-2]}"


def container_images(kind: str, obj: Any) -> list[ContainerImage]:
    """All images of an object of a kind in POD_SPEC_PATHS, in a stable order (see podspec.py)."""
    return [
        ContainerImage(container=name, list_name=list_name, image=image, pointer=pointer)
        for list_name, name, image, pointer in walk_containers(kind, obj)
    ]
