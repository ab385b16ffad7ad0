"""Where containers live in the objects that reach the webhook: the table and the walk.

Standard library only: the hook's fast path (fastpath.py) uses this before anything else is
imported. One table maps each kind to the path of its pod spec; each pod spec has three
container lists.

The paths are walked by hand, not with a jsonpath library: that import alone costs tens of
milliseconds in a process started per request, and a walk can tell an absent field (no images)
from one of the wrong shape (an error; skipping it would admit images nobody checked). The
tests check the walk against jsonpath-ng on every kind.
"""

from __future__ import annotations

import os  # no typing: the fast path must not import it

from .errors import InputError

# Facts the fast path and the relay share with the rest of the hook. They live here because this
# is the one library module those paths import: the standard library and errors.py only.
# The operations whose objects are checked; the bindings subscribe to exactly these.
CHECKED_OPERATIONS = ("CREATE", "UPDATE")
DEFAULT_CONFIG_PATH = "/etc/signgate/config.yaml"


def config_path(environ: dict[str, str] | os._Environ[str]) -> str:
    """The configuration file: $SIGNGATE_CONFIG, else the default."""
    return environ.get("SIGNGATE_CONFIG") or DEFAULT_CONFIG_PATH

# kind -> dotted path of the pod spec within the object ("" for the object itself)
POD_SPEC_PATHS: dict[str, str] = {
    "Pod": "spec",
    "Deployment": "spec.template.spec",
    "ReplicaSet": "spec.template.spec",
    "StatefulSet": "spec.template.spec",
    "DaemonSet": "spec.template.spec",
    "Job": "spec.template.spec",
    "ReplicationController": "spec.template.spec",
    "CronJob": "spec.jobTemplate.spec.template.spec",
    # Clusters before 1.22 send the pods/ephemeralcontainers subresource (`kubectl debug`) as an
    # object of its own kind, with the list at its top level: {"kind": "EphemeralContainers",
    # "ephemeralContainers": [...]}. Without this entry it would be "no pod spec" and admitted.
    "EphemeralContainers": "",
}
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def is_checked(operation: object) -> bool:
    """Whether objects sent with this operation are checked (the one place that says so)."""
    return operation in CHECKED_OPERATIONS


def pod_spec_kind(request: dict[str, object]) -> str | None:
    """The kind of the object under admission, if it is one that carries a pod spec."""
    kind = request.get("kind")
    name = kind.get("kind") if isinstance(kind, dict) else None
    if not isinstance(name, str):
        obj = request.get("object")
        name = obj.get("kind") if isinstance(obj, dict) else None
    return name if name in POD_SPEC_PATHS else None


def walk_containers(kind: str, obj: object) -> list[tuple[str, str, object, str]]:
    """(list name, container name, image, JSON Pointer of the image) for every container.

    A missing (or null) pod spec or container list has no images. Anything present but of the
    wrong shape is an InputError: skipping it would admit images that were never checked.
    """
    if not isinstance(obj, dict):
        raise InputError(f"the {kind} object is not a JSON object")
    spec: object = obj
    pointer = ""
    for field_name in filter(None, POD_SPEC_PATHS[kind].split(".")):
        spec = spec.get(field_name)  # type: ignore[union-attr]
        pointer += f"/{field_name}"
        if spec is None:
            return []
        if not isinstance(spec, dict):
            raise InputError(f"{pointer}: is not an object")
    found = []
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
            found.append((list_name, name if isinstance(name, str) else "", container.get("image"), f"{where}/image"))
    return found
