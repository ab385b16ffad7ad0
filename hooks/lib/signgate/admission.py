"""The admission request, parsed once, and where images live in the objects that reach the webhook.

`AdmissionRequest.parse` turns the `review.request` object of a binding context into a frozen
model and refuses a malformed one with an InputError, so that the decision, the pinning and the
log read typed fields instead of probing a dict. It is lenient exactly where the hook always was:
an operation it does not check, or a kind without a pod spec, is admitted whatever the rest looks
like, so only a checked request's object must be well formed.

One table maps each kind to the path of its pod spec; each pod spec has three container lists.
Every image is reported with its container, its list and its JSON Pointer, so that messages can
name the container and a mutating call can patch the exact location. The table and the walk live
in podspec.py (standard library only, for the fast path).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import InputError
from .podspec import CONTAINER_LISTS, POD_SPEC_PATHS, is_checked, pod_spec_kind, walk_containers  # noqa: F401  (re-exported)


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


@dataclass(frozen=True)
class RequestFields:
    """What the decision log says about a request. Built from anything, never refused: the log of
    a malformed request still names what it can."""

    uid: str = ""
    namespace: str = ""
    kind: str = ""
    name: str = ""
    operation: str = ""

    @classmethod
    def of(cls, request: Any) -> "RequestFields":
        if not isinstance(request, dict):
            return cls()
        kind = request.get("kind") if isinstance(request.get("kind"), dict) else {}
        obj = request.get("object") if isinstance(request.get("object"), dict) else {}
        metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        name = request.get("name") or metadata.get("name") or metadata.get("generateName") or ""
        return cls(
            uid=_text(request.get("uid")),
            namespace=_text(request.get("namespace")),
            kind=_text(kind.get("kind", "")),
            name=_text(name),
            operation=_text(request.get("operation")),
        )

    def as_log(self) -> dict[str, str]:
        return {"uid": self.uid, "namespace": self.namespace, "kind": self.kind, "name": self.name,
                "operation": self.operation}


@dataclass(frozen=True)
class AdmissionRequest:
    """One admission request. Invariants, checked by `parse`: a checked request (CREATE or UPDATE
    of a kind with a pod spec) carries an object, and its pod spec and container lists have the
    right shapes; `containers` then lists every image, and is empty for any other request."""

    fields: RequestFields
    operation: Any  # as sent; only CHECKED_OPERATIONS are checked (the summary quotes it)
    pod_kind: str | None  # the kind, when it carries a pod spec (POD_SPEC_PATHS)
    object: dict[str, Any] | None
    old_object: Any  # only read at JSON Pointers, by pinning (absent paths are None)
    containers: tuple[ContainerImage, ...]

    @property
    def checked(self) -> bool:
        return self.pod_kind is not None and is_checked(self.operation)

    @classmethod
    def parse(cls, request: Any, missing: str = "the admission review has no request object") -> "AdmissionRequest":
        """The model of `request` (the review's request object). `missing` is the message when
        there is no such object."""
        if not isinstance(request, dict):
            raise InputError(missing)
        operation = request.get("operation")
        kind = pod_spec_kind(request)
        obj = request.get("object")
        containers: tuple[ContainerImage, ...] = ()
        if kind is not None and is_checked(operation):
            if obj is None:
                raise InputError(f"the {operation} request for a {kind} carries no object")
            containers = tuple(container_images(kind, obj))
        return cls(
            fields=RequestFields.of(request),
            operation=operation,
            pod_kind=kind,
            object=obj if isinstance(obj, dict) else None,
            old_object=request.get("oldObject"),
            containers=containers,
        )


def container_images(kind: str, obj: Any) -> list[ContainerImage]:
    """All images of an object of a kind in POD_SPEC_PATHS, in a stable order (see podspec.py)."""
    return [
        ContainerImage(container=name, list_name=list_name, image=image, pointer=pointer)
        for list_name, name, image, pointer in walk_containers(kind, obj)
    ]


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""
