"""Where images live in the objects that reach the webhook.

One table maps each kind to the jsonpath of its pod spec; each pod spec has three container
lists. Every image is reported with its container, its list and its JSON Pointer, so that
messages can name the container and a mutating call can patch the exact location.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .errors import InputError

# kind -> jsonpath of the pod spec within the object
POD_SPEC_PATHS: dict[str, str] = {
    "Pod": "spec",
    "Deployment": "spec.template.spec",
    "ReplicaSet": "spec.template.spec",
    "StatefulSet": "spec.template.spec",
    "DaemonSet": "spec.template.spec",
    "Job": "spec.template.spec",
    "ReplicationController": "spec.template.spec",
    "CronJob": "spec.jobTemplate.spec.template.spec",
}
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


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


@lru_cache(maxsize=None)
def _expression(spec_path: str, list_name: str) -> Any:
    from jsonpath_ng import parse

    return parse(f"{spec_path}.{list_name}[*]")


def pod_spec_kind(request: dict[str, Any]) -> str | None:
    """The kind of the object under admission, if it is one that carries a pod spec."""
    kind = request.get("kind")
    name = kind.get("kind") if isinstance(kind, dict) else None
    if not isinstance(name, str):
        obj = request.get("object")
        name = obj.get("kind") if isinstance(obj, dict) else None
    return name if name in POD_SPEC_PATHS else None


def container_images(kind: str, obj: Any) -> list[ContainerImage]:
    """All images of an object of a kind in POD_SPEC_PATHS, in a stable order."""
    if not isinstance(obj, dict):
        raise InputError(f"the {kind} object is not a JSON object")
    spec_path = POD_SPEC_PATHS[kind]
    images: list[ContainerImage] = []
    for list_name in CONTAINER_LISTS:
        for match in _expression(spec_path, list_name).find(obj):
            container = match.value
            pointer = "/" + "/".join(_pointer_parts(str(match.full_path))) + "/image"
            if not isinstance(container, dict):
                raise InputError(f"{pointer.rsplit('/', 1)[0]}: a container entry is not an object")
            name = container.get("name")
            images.append(
                ContainerImage(
                    container=name if isinstance(name, str) else "",
                    list_name=list_name,
                    image=container.get("image"),
                    pointer=pointer,
                )
            )
    return images


def _pointer_parts(full_path: str) -> list[str]:
    """jsonpath-ng's `spec.template.spec.containers.[0]` -> ["spec", ..., "containers", "0"]."""
    parts = []
    for part in full_path.split("."):
        if part.startswith("[") and part.endswith("]"):
            parts.append(part[1:-1])
        else:
            parts.append(part.replace("~", "~0").replace("/", "~1"))
    return parts
