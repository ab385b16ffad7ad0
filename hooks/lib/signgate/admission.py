"""Where images live in the objects that reach the webhook.

One table maps each kind to the path of its pod spec; each pod spec has three container
lists. Every image is reported with its container, its list and its JSON Pointer, so that
messages can name the container and a mutating call can patch the exact location.

The paths are walked by hand, not with a jsonpath library: that import alone costs tens of
milliseconds in a process started per request, and a walk can tell an absent field (no images)
from one of the wrong shape (an error; skipping it would admit images nobody checked).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InputError

# kind -> dotted path of the pod spec within the object
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


def pod_spec_kind(request: dict[str, Any]) -> str | None:
    """The kind of the object under admission, if it is one that carries a pod spec."""
    kind = request.get("kind")
    name = kind.get("kind") if isinstance(kind, dict) else None
    if not isinstance(name, str):
        obj = request.get("object")
        name = obj.get("kind") if isinstance(obj, dict) else None
    return name if name in POD_SPEC_PATHS else None


def container_images(kind: str, obj: Any) -> list[ContainerImage]:
    """All images of an object of a kind in POD_SPEC_PATHS, in a stable order.

    A missing (or null) pod spec or container list has no images. Anything present but of the
    wrong shape is an InputError: skipping it would admit images that were never checked.
    """
    if not isinstance(obj, dict):
        raise InputError(f"the {kind} object is not a JSON object")
    spec: Any = obj
    pointer = ""
    for field_name in POD_SPEC_PATHS[kind].split("."):
        spec = spec.get(field_name)
        pointer += f"/{field_name}"
        if spec is None:
            return []
        if not isinstance(spec, dict):
            raise InputError(f"{pointer}: is not an object")
    images: list[ContainerImage] = []
    for list_name in CONTAINER_LISTS:
        entries = spec.get(list_name)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise InputError(f"{pointer}/{list_name}: is not a list of containers")
        for position, container in enumerate(entries):
            where = f"{pointer}/{list_name}/{position}"
            if not isinstance(container, dict):
                raise InputError(f"{where}: a container entry is not an object")
            name = container.get("name")
            images.append(
                ContainerImage(
                    container=name if isinstance(name, str) else "",
                    list_name=list_name,
                    image=container.get("image"),
                    pointer=f"{where}/image",
                )
            )
    return images
