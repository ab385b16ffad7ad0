"""admission.AdmissionRequest: the review's request parsed once, refused with an InputError when a
checked request is malformed, and lenient where the hook admits without looking."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signgate.admission import AdmissionRequest, ContainerImage, RequestFields
from signgate.errors import InputError


def request(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "uid": "u-1",
        "operation": "CREATE",
        "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
        "namespace": "shop",
        "name": "web",
        "object": {"kind": "Deployment", "metadata": {"name": "web"},
                   "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a.io/app:v1"}]}}}},
    }
    base.update(fields)
    return {k: v for k, v in base.items() if v is not ...}


def test_a_checked_request_lists_its_containers_and_names_itself() -> None:
    parsed = AdmissionRequest.parse(request())
    assert parsed.checked and parsed.pod_kind == "Deployment" and parsed.operation == "CREATE"
    assert parsed.containers == (ContainerImage("app", "containers", "a.io/app:v1", "/spec/template/spec/containers/0/image"),)
    assert parsed.fields == RequestFields(uid="u-1", namespace="shop", kind="Deployment", name="web", operation="CREATE")
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.operation = "DELETE"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(None, "the admission review has no request object", id="none"),
        pytest.param([], "the admission review has no request object", id="a-list"),
        pytest.param(request(object=...), "the CREATE request for a Deployment carries no object", id="no-object"),
        pytest.param(request(object=None), "the CREATE request for a Deployment carries no object", id="null-object"),
        pytest.param(request(object="x"), "the Deployment object is not a JSON object", id="object-is-a-string"),
        pytest.param(request(object={"spec": {"template": []}}), "/spec/template: is not an object", id="template-is-a-list"),
        pytest.param(request(object={"spec": {"template": {"spec": {"initContainers": [3]}}}}),
                     "/spec/template/spec/initContainers/0: a container entry is not an object", id="container-is-a-number"),
    ],
)
def test_a_malformed_checked_request_is_an_input_error(raw: Any, message: str) -> None:
    with pytest.raises(InputError) as raised:
        AdmissionRequest.parse(raw)
    assert str(raised.value) == message


def test_the_caller_names_what_is_missing() -> None:
    with pytest.raises(InputError, match="^the binding context has no review.request object$"):
        AdmissionRequest.parse("nope", "the binding context has no review.request object")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(request(operation="DELETE", object="anything"), id="unchecked-operation"),
        pytest.param(request(operation=None, object=[1]), id="no-operation"),
        pytest.param(request(kind={"kind": "ConfigMap"}, object={"kind": "ConfigMap", "data": {}}), id="kind-without-pod-spec"),
    ],
)
def test_an_unchecked_request_is_not_walked(raw: dict[str, Any]) -> None:
    parsed = AdmissionRequest.parse(raw)
    assert not parsed.checked and parsed.containers == ()


def test_the_kind_falls_back_to_the_objects_own_kind() -> None:
    parsed = AdmissionRequest.parse(request(kind=..., object={"kind": "Pod", "spec": {"containers": []}}))
    assert parsed.pod_kind == "Pod" and parsed.checked and parsed.containers == ()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


@given(raw=st.dictionaries(st.sampled_from(["uid", "operation", "kind", "namespace", "name", "object", "oldObject"]),
                           _json, max_size=7) | _json)
def test_any_json_is_a_model_or_an_input_error_and_the_log_fields_never_fail(raw: Any) -> None:
    fields = RequestFields.of(raw)
    assert all(isinstance(value, str) for value in fields.as_log().values())
    try:
        parsed = AdmissionRequest.parse(raw)
    except InputError:
        return
    assert parsed.fields == fields
    assert all(isinstance(c, ContainerImage) for c in parsed.containers)
    assert parsed.checked or parsed.containers == ()
