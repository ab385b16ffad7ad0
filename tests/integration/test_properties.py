"""Properties (hypothesis): whatever the input, signgate answers and never crashes.

- Image references: parsing raises nothing but InvalidReference, and normalising is idempotent
  (tests/unit/test_reference.py holds the grammar-level properties); at the hook level, any value in an
  `image:` field gets a verdict for its own container and never an internal error.
- The binding context: ANY JSON value (or any bytes) written as the binding-context file makes the
  hook exit 0, and write one JSON object with a boolean `allowed` whenever the file holds an
  admission context or is not a list of contexts at all. The one case where the hook writes no
  response is by design: a well-formed list of contexts with no Validating/Mutating context
  (shell-operator's Synchronization or Schedule runs), which has no request to answer.
  This is checked in-process through `hook.run_admission` with many examples, and on the real
  executable as a subprocess with a modest number.
- Signature payloads (`cosign.SimpleSigningPayload.parse`, `check_simple_signing_claims`) and sigstore
  bundles (`bundle.check_bundle`): malformed input is a ValueError with a readable message or a
  problem string, never another exception, and only well-formed claims are accepted.

The configuration used by the hook-level properties has static rules only, so no example can
cause network I/O; a connection guard makes sure of it for the subprocess runs.
"""

from __future__ import annotations

import base64
import io
import json
import string
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from support.contract import BINDING, admission_request, pod_spec, run_contexts, workload
from support.hostile import ConnectionAudit, write_config
from signgate import hook
from signgate.verifiers.cosign.bundle import check_bundle
from signgate.config import KeySpec
from signgate.verifiers.cosign.legacy import COSIGN_SIGNATURE_TYPE, PayloadError, Requirements, SimpleSigningPayload, check_simple_signing_claims
from signgate.errors import InvalidReference
from signgate.keys import load_public_key
from signgate.reference import ImageReference, parse_reference
from signgate.verifiers.cosign.rekor import RekorKeys, check_legacy_tlog
from support.signer import TestKey, b64, dsse_envelope, in_toto_statement, pae, sigstore_bundle, simple_signing_payload

DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
KINDS = ["Pod", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicationController"]

# ---- strategies -------------------------------------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=5), st.dictionaries(st.text(max_size=12), children, max_size=5)),
    max_leaves=25,
)

image_strings = st.one_of(
    st.sampled_from(
        [
            "registry.example.com/allowed/app:v1",
            "registry.example.com/allowed/app@" + DIGEST,
            "registry.example.com/denied/app:v1",
            "registry.example.com/other/app:v1",
            "nginx",
            "",
            " ",
            "UPPER/case:tag",
            "a" * 300,
            "registry.example.com/allowed/app:" + "t" * 200,
            "169.254.169.254/allowed/x:1",
            "[::1]:5000/x:1",
        ]
    ),
    st.text(alphabet=string.ascii_letters + string.digits + "._-/:@[]+ \u00e9", max_size=60),
    st.text(max_size=40),
)
images = st.one_of(image_strings, json_scalars, json_values)


@st.composite
def containers(draw: Any) -> Any:
    entries = []
    for position in range(draw(st.integers(min_value=0, max_value=4))):
        entry: Any = {"name": draw(st.one_of(st.just(f"c{position}"), json_scalars)), "image": draw(images)}
        if draw(st.integers(min_value=0, max_value=9)) == 0:
            entry = draw(json_values)  # a container entry that is not an object
        elif draw(st.booleans()):
            entry.pop("image")
        entries.append(entry)
    return entries


@st.composite
def admission_objects(draw: Any) -> Any:
    kind = draw(st.sampled_from(KINDS))
    spec: Any = pod_spec([])
    spec["containers"] = draw(st.one_of(containers(), json_values))
    for name in ("initContainers", "ephemeralContainers"):
        if draw(st.booleans()):
            spec[name] = draw(st.one_of(containers(), json_values))
    if draw(st.integers(min_value=0, max_value=7)) == 0:
        spec = draw(json_values)
    obj = workload(kind, spec)
    request = admission_request(obj, operation=draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT", None, 7])))
    # Damage one field of the request now and then.
    if draw(st.integers(min_value=0, max_value=4)) == 0:
        field = draw(st.sampled_from(sorted(request)))
        request[field] = draw(json_values)
    return request


@st.composite
def binding_contexts(draw: Any) -> Any:
    request = draw(st.one_of(admission_objects(), json_values))
    review = draw(st.one_of(st.just({"request": request}), st.builds(dict, request=json_values), json_values))
    kind = draw(st.sampled_from(["Validating", "Validating", "Mutating", "Synchronization", None, 1]))
    context = {"binding": BINDING, "type": kind, "review": review}
    extra = draw(st.lists(json_values, max_size=2))
    shape = draw(st.sampled_from(["list", "bare-object", "with-others"]))
    if shape == "bare-object":
        return context
    if shape == "with-others":
        return extra + [context] + extra
    return [context]


any_binding_context = st.one_of(binding_contexts(), json_values)


# ---- the oracle ---------------------------------------------------------------------------------------


def response_expected(value: Any) -> bool:
    """False only for a well-formed list of contexts without an admission context (see the module doc)."""
    contexts = [value] if isinstance(value, dict) else value
    if not isinstance(contexts, list):
        return True
    return any(isinstance(c, dict) and c.get("type") in ("Validating", "Mutating") for c in contexts)


def check_response(raw: str, expected: bool) -> None:
    if not expected:
        assert raw == "", f"a response to a call with no admission context: {raw!r}"
        return
    body = json.loads(raw)  # exactly one JSON document
    assert isinstance(body, dict), raw
    assert isinstance(body.get("allowed"), bool), raw
    assert set(body) <= {"allowed", "message", "warnings"}, raw
    if not body["allowed"]:
        assert isinstance(body.get("message"), str) and body["message"].startswith("signgate: "), raw
        assert "internal error" not in body["message"], raw
    for warning in body.get("warnings", []):
        assert isinstance(warning, str)


# ---- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("properties")


@pytest.fixture(scope="module")
def static_config(workdir: Path, keys: dict[str, TestKey]) -> Path:
    """Static rules only: no image can make the hook contact a registry."""
    return write_config(
        workdir / "static.json",
        keys["ecdsa-p256"],
        policy=[
            {"images": "registry.example.com/allowed/**", "action": "allow"},
            {"images": "registry.example.com/denied/**", "action": "deny", "message": "denied by the property tests"},
            {"images": "169.254.169.254/allowed/**", "action": "allow"},
        ],
    )


@pytest.fixture(scope="module")
def public_key(keys: dict[str, TestKey]) -> Any:
    return load_public_key(KeySpec("default", str(keys["ecdsa-p256"].pub_path)))


def run_in_process(config: Path, raw_context: bytes, workdir: Path) -> str:
    context_path = workdir / "context.json"
    response_path = workdir / "response.json"
    context_path.write_bytes(raw_context)
    response_path.write_text("")
    environ = {
        "SIGNGATE_CONFIG": str(config),
        "BINDING_CONTEXT_PATH": str(context_path),
        "VALIDATING_RESPONSE_PATH": str(response_path),
    }
    log = io.StringIO()
    assert hook.run_admission(environ, time.monotonic(), log) == 0
    for line in log.getvalue().splitlines():
        assert "Traceback" not in line
        json.loads(line)  # every log line is one JSON object
    return response_path.read_text()


# ---- references ---------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.one_of(image_strings, st.text(max_size=120)))
def test_reference_parsing_raises_only_invalid_reference_and_normalising_is_idempotent(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReference as exc:
        assert str(exc) and len(str(exc)) < 600  # the reference and the bad part, each shortened to 200
        return
    assert isinstance(ref, ImageReference)
    again = parse_reference(str(ref))
    assert str(again) == str(ref)
    assert (again.registry, again.repository, again.tag, again.digest) == (ref.registry, ref.repository, ref.tag, ref.digest)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(images, min_size=1, max_size=6))
def test_every_image_value_gets_a_verdict_for_its_own_container(static_config: Path, workdir: Path, values: list[Any]) -> None:
    request = admission_request(workload("Pod", {"containers": [{"name": f"c{n}", "image": v} for n, v in enumerate(values)]}))
    context = [{"binding": BINDING, "type": "Validating", "review": {"request": request}}]
    body = json.loads(run_in_process(static_config, json.dumps(context).encode(), workdir))
    allowed = {"registry.example.com/allowed", "169.254.169.254/allowed"}
    for number, value in enumerate(values):
        try:
            admitted = isinstance(value, str) and any(parse_reference(value).name.startswith(p + "/") for p in allowed)
        except InvalidReference:
            admitted = False
        line = f'container "c{number}" image '
        if admitted:
            assert line not in body.get("message", "")
        else:
            assert body["allowed"] is False and line in body["message"], (value, body)


# ---- the binding context ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(any_binding_context)
@example([])
@example({})
@example([{"type": "Synchronization"}])
@example([{"type": "Validating"}])
@example([{"type": "Validating", "review": {"request": {}}}])
@example([{"type": "Validating", "review": {"request": {"operation": "CREATE", "kind": {"kind": "Pod"}}}}])
def test_any_json_binding_context_gets_a_valid_response_in_process(static_config: Path, workdir: Path, value: Any) -> None:
    raw = run_in_process(static_config, json.dumps(value).encode(), workdir)
    check_response(raw, response_expected(value))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
@example(b"")
@example(b"\xff\xfe\x00")
@example(b"[" * 100_000)
@example(b'[{"type": "Validating", "review": {"request": {"operation": "CREATE"')
def test_any_bytes_as_binding_context_get_a_valid_response_in_process(static_config: Path, workdir: Path, raw: bytes) -> None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        expected = True
    else:
        expected = response_expected(value)
    check_response(run_in_process(static_config, raw, workdir), expected)


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(binding_contexts(), binding_contexts(), json_values))
def test_any_json_binding_context_gets_a_valid_response_from_the_hook_process(static_config: Path, workdir: Path, value: Any) -> None:
    guard = ConnectionAudit(workdir / "guard")
    guard.clear()
    env = {**guard.env, "SIGNGATE_CACHE_DIR": str(workdir / "cache")}  # the stdlib fast path reads it too
    run = run_contexts(static_config, value, env=env, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    check_response(run.raw_response, response_expected(value))
    assert guard.connections() == []


@pytest.mark.slow
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
@example(b"\x00" * 10)
@example(b"[" * 100_000)
def test_any_bytes_as_binding_context_get_a_valid_response_from_the_hook_process(static_config: Path, raw: bytes) -> None:
    try:
        expected = response_expected(json.loads(raw))
    except (ValueError, RecursionError):
        expected = True
    run = run_contexts(static_config, None, raw_context=raw, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    check_response(run.raw_response, expected)


# ---- signature payloads -----------------------------------------------------------------------------


@st.composite
def simple_signing_documents(draw: Any) -> Any:
    """Near-valid payloads: every part is sometimes right, sometimes missing, sometimes junk."""

    def maybe(value: Any) -> Any:
        return draw(st.one_of(st.just(value), json_values))

    image = maybe({"docker-manifest-digest": draw(st.sampled_from([DIGEST, OTHER_DIGEST, DIGEST.upper(), ""]))})
    identity = maybe({"docker-reference": maybe(draw(st.sampled_from(["registry.example.com/app", "Not A Name", ""])))})
    critical = {"identity": identity, "image": image, "type": maybe(COSIGN_SIGNATURE_TYPE)}
    for name in list(critical):
        if draw(st.integers(min_value=0, max_value=5)) == 0:
            del critical[name]
    annotations = st.dictionaries(st.sampled_from(["env", "team", ""]), json_values, max_size=3)
    document = {"critical": maybe(critical), "optional": draw(st.one_of(st.none(), annotations, json_values))}
    if draw(st.integers(min_value=0, max_value=6)) == 0:
        del document["optional"]
    return document


requirements = st.builds(
    Requirements,
    annotations=st.lists(st.tuples(st.sampled_from(["env", "team"]), st.sampled_from(["prod", "1", ""])), max_size=2).map(tuple),
    identity=st.sampled_from([None, "registry.example.com/app", "registry.example.com/other"]),
)
payloads = st.one_of(
    st.binary(max_size=200),
    simple_signing_documents().map(lambda d: json.dumps(d).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.just(simple_signing_payload("registry.example.com/app", DIGEST)),
)


@settings(max_examples=500, deadline=None)
@given(payloads)
@example(b'{"critical":{"image":{"docker-manifest-digest":"x"},"identity":[]}}')
@example(b"\xff\xfe{}")
def test_parse_simple_signing_returns_a_typed_payload_or_a_readable_payload_error(payload: bytes) -> None:
    try:
        parsed = SimpleSigningPayload.parse(payload)
    except PayloadError as exc:
        assert str(exc).startswith("its payload")
        return
    document = json.loads(payload)
    assert parsed.manifest_digest == document["critical"]["image"]["docker-manifest-digest"]
    assert parsed.type == document["critical"].get("type")
    assert parsed.optional == (document.get("optional") or {})


@settings(max_examples=500, deadline=None)
@given(payloads, requirements)
def test_claims_check_never_raises_and_accepts_only_well_formed_matching_claims(payload: bytes, wanted: Requirements) -> None:
    problem = check_simple_signing_claims(payload, DIGEST, wanted)
    if problem is not None:
        assert isinstance(problem, str) and problem
        return
    document = json.loads(payload)
    assert document["critical"]["image"]["docker-manifest-digest"] == DIGEST
    assert document["critical"]["type"] == COSIGN_SIGNATURE_TYPE
    optional = document.get("optional") or {}
    for key, value in wanted.annotations:
        assert optional[key] == value
    if wanted.identity is not None:
        assert parse_reference(document["critical"]["identity"]["docker-reference"]).name == wanted.identity


def test_problem_with_a_huge_payload_type_stays_short() -> None:
    payload = json.dumps({"critical": {"image": {"docker-manifest-digest": DIGEST}, "type": "x" * 100_000}}).encode()
    problem = check_simple_signing_claims(payload, DIGEST, Requirements())
    assert problem is not None and "payload type" in problem
    assert len(problem) < 400


BUG_RECURSION = (
    "BUG (not ours to edit): json.loads on deeply nested input raises RecursionError, which is not a ValueError; "
    "catch RecursionError next to ValueError"
)


def test_deeply_nested_payload_is_a_payload_error() -> None:
    with pytest.raises(PayloadError):
        SimpleSigningPayload.parse(b"[" * 100_000)


# ---- sigstore bundles ---------------------------------------------------------------------------------


@st.composite
def near_bundles(draw: Any, key: TestKey) -> bytes:
    statement = in_toto_statement(draw(st.sampled_from([DIGEST, OTHER_DIGEST])))
    payload_type = draw(st.sampled_from(["application/vnd.in-toto+json", "text/plain"]))
    signature = key.sign(pae(payload_type, statement))
    envelope: Any = dsse_envelope(statement, payload_type, [signature])
    bundle: Any = json.loads(sigstore_bundle(envelope, key.hint))
    # Replace one or two parts of the envelope or the bundle with junk.
    for _ in range(draw(st.integers(min_value=0, max_value=2))):
        target = draw(st.sampled_from(["bundle", "envelope", "signatures", "payload"]))
        junk = draw(st.one_of(json_values, st.text(alphabet="ABCD+/=-_", max_size=12)))
        if target == "bundle":
            bundle[draw(st.sampled_from(["mediaType", "dsseEnvelope", "verificationMaterial"]))] = junk
        elif target == "envelope" and isinstance(bundle.get("dsseEnvelope"), dict):
            bundle["dsseEnvelope"][draw(st.sampled_from(["payloadType", "payload", "signatures"]))] = junk
        elif target == "signatures" and isinstance(bundle.get("dsseEnvelope"), dict):
            bundle["dsseEnvelope"]["signatures"] = [junk, {"sig": junk}, {"sig": b64(signature)}][: draw(st.integers(1, 3))]
        elif target == "payload" and isinstance(bundle.get("dsseEnvelope"), dict):
            bundle["dsseEnvelope"]["payload"] = b64(json.dumps(draw(json_values)).encode())
    return json.dumps(bundle).encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_check_bundle_on_arbitrary_input_never_raises(keys: dict[str, TestKey], public_key: Any, data: Any) -> None:
    raw = data.draw(st.one_of(st.binary(max_size=300), json_values.map(lambda v: json.dumps(v).encode()), near_bundles(keys["ecdsa-p256"])))
    result = check_bundle("bundle under test", raw, [public_key], DIGEST, Requirements())
    assert result.layout == "bundle"
    if result.counts:
        # Only a bundle that really is a signature by the key over this digest counts.
        envelope = json.loads(raw)["dsseEnvelope"]
        assert envelope["payloadType"] == "application/vnd.in-toto+json"
        statement = json.loads(base64.b64decode(envelope["payload"]))
        assert any(s.get("digest", {}).get("sha256") == DIGEST.partition(":")[2] for s in statement["subject"])
        assert result.problem is None and result.keys == (public_key,)
    else:
        assert isinstance(result.problem, str) and result.problem


def test_a_well_formed_bundle_counts_so_the_property_above_is_not_vacuous(keys: dict[str, TestKey], public_key: Any) -> None:
    key = keys["ecdsa-p256"]
    statement = in_toto_statement(DIGEST)
    signature = key.sign(pae("application/vnd.in-toto+json", statement))
    raw = sigstore_bundle(dsse_envelope(statement, "application/vnd.in-toto+json", [signature]), key.hint)
    assert check_bundle("ok", raw, [public_key], DIGEST, Requirements()).counts


def test_deeply_nested_bundle_is_a_problem_not_an_exception(public_key: Any) -> None:
    result = check_bundle("deep", b"[" * 100_000, [public_key], DIGEST, Requirements())
    assert result.problem == "it is not valid JSON"


def test_deeply_nested_rekor_annotation_is_a_problem_not_an_exception(public_key: Any) -> None:
    problem = check_legacy_tlog("[" * 100_000, b"payload", b"signature", public_key, RekorKeys.of([public_key]))
    assert problem == "its Rekor bundle is malformed"
