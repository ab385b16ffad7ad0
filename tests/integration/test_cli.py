"""The `signgate` command line, run as a subprocess: `python -m signgate --config CFG ...`.

verify and check go to the real registry on 127.0.0.1; `check` must give, object by object, the
answer the webhook gives, so its denials are compared with the hook's own (contract.run_request).
Exit codes: 0 all pass, 1 a denial or failed image, 2 usage or configuration error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from support.contract import REPO, admission_request, pod_spec, run_request, workload
from support.oci import PushedImage, RegistryHTTP, push_image
from support.registry import Registry
from support.signer import TestKey, generate_key, sign_legacy

pytestmark = pytest.mark.registry

BINDING = "image-signatures.signgate.dev"
KINDS = ["Pod", "Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicationController"]


def run_cli(config: Path | str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNGATE_")}
    env["PYTHONPATH"] = str(REPO / "hooks" / "lib")
    return subprocess.run(
        [sys.executable, "-m", "signgate", "--config", str(config), *args],
        env=env, input=stdin, capture_output=True, text=True, timeout=60, cwd=REPO,
    )


@dataclass
class Setup:
    """A signed and an unsigned image on the registry, and a config: public/* allowed, the rest
    of the prefix verified with key a."""

    host: str
    prefix: str
    directory: Path
    config: Path
    signed: PushedImage
    unsigned: PushedImage
    keys: dict[str, TestKey]

    @property
    def public(self) -> str:
        return f"{self.host}/{self.prefix}/public/tool:v1"

    @property
    def verify_pattern(self) -> str:
        return f"{self.host}/{self.prefix}/**"

    def write_config(self, name: str, data: dict[str, Any] | None = None, raw: str | None = None) -> Path:
        path = self.directory / name
        path.write_text(raw if raw is not None else yaml.safe_dump(data, sort_keys=False))
        return path

    def base_config(self, **top: Any) -> dict[str, Any]:
        return {
            "keys": {"a": str(self.keys["a"].pub_path), "b": str(self.keys["b"].pub_path)},
            "registries": {"insecure": [self.host]},
            "policy": [
                {"images": f"{self.host}/{self.prefix}/public/*", "action": "allow"},
                {"images": self.verify_pattern, "keys": ["a"]},
            ],
            **top,
        }


@pytest.fixture(scope="module")
def setup(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp("cli")
    keys = {name: generate_key("ecdsa-p256", directory, name) for name in ("a", "b")}
    http = RegistryHTTP(registry)
    prefix = f"t/cli-{uuid.uuid4().hex[:8]}"
    signed = push_image(http, f"{prefix}/app", "v1")
    sign_legacy(http, signed.repo, signed.digest, keys["a"])
    unsigned = push_image(http, f"{prefix}/unsigned", "v1")
    made = Setup(http.host, prefix, directory, directory / "config.yaml", signed, unsigned, keys)
    made.write_config("config.yaml", made.base_config())
    yield made
    http.close()


# ---- verify ------------------------------------------------------------------------------------------


def block(image: str, rule: str, result: str, digest: str | None = None) -> str:
    lines = [image, f"  rule:   {rule}"] + ([f"  digest: {digest}"] if digest else []) + [f"  result: {result}"]
    return "\n".join(lines) + "\n"


VERIFY_CASES = [
    pytest.param(["signed"], 0, id="signed-image-passes-printing-rule-digest-and-signer"),
    pytest.param(["unsigned"], 1, id="unsigned-image-fails-with-the-reason"),
    pytest.param(["signed", "unsigned"], 1, id="one-failing-image-in-the-list-fails-the-command"),
    pytest.param(["signed", "public"], 0, id="signed-and-allowlisted-images-pass"),
    pytest.param(["untrusted"], 1, id="image-matching-no-rule-fails-as-untrusted"),
]


@pytest.mark.parametrize(("images", "code"), VERIFY_CASES)
def test_verify(setup: Setup, images: list[str], code: int) -> None:
    verify_rule = f"policy[1] ({setup.verify_pattern})"
    expected = {
        "signed": (setup.signed.reference,
                   block(setup.signed.reference, verify_rule, "PASS (verified by key(s) a)", setup.signed.digest)),
        "unsigned": (setup.unsigned.reference,
                     block(setup.unsigned.reference, verify_rule,
                           f"FAIL: no signature found in {setup.unsigned.repository} for {setup.unsigned.digest[:19]}…",
                           setup.unsigned.digest)),
        "public": (setup.public,
                   block(setup.public, f"policy[0] ({setup.host}/{setup.prefix}/public/*)", "PASS (allowed-by-rule)")),
        "untrusted": ("quay.io/team/app:1.0",
                      block("quay.io/team/app:1.0", "(none)",
                            "FAIL: registry or repository quay.io/team/app is not trusted: no policy rule matches it")),
    }
    completed = run_cli(setup.config, "verify", *[expected[name][0] for name in images])
    assert completed.returncode == code, completed.stderr
    position = 0
    for name in images:
        text = expected[name][1]
        if name == "unsigned":  # the reason goes on to say what was searched
            text = text.rstrip("\n")
        found = completed.stdout.find(text, position)
        assert found >= 0, f"{text!r} not in order in:\n{completed.stdout}"
        position = found + len(text)


def test_verify_json_output_parses(setup: Setup) -> None:
    completed = run_cli(setup.config, "verify", setup.signed.reference, setup.unsigned.reference, "-o", "json")
    assert completed.returncode == 1
    signed, unsigned = json.loads(completed.stdout)
    assert signed["image"] == setup.signed.reference and signed["passed"] is True
    assert signed["digest"] == setup.signed.digest and signed["keys"] == ["a"]
    assert signed["rule"] == f"policy[1] ({setup.verify_pattern})" and signed["mode"] == "enforce"
    assert unsigned["passed"] is False and unsigned["reason"] == "no-signature"
    assert unsigned["message"].startswith("no signature found") and unsigned["digest"] == setup.unsigned.digest


def test_verify_fails_when_the_request_itself_is_denied(setup: Setup) -> None:
    config = setup.write_config("few-images.yaml", setup.base_config(limits={"maxImagesPerRequest": 1}))
    completed = run_cli(config, "verify", setup.signed.reference, setup.signed.reference)
    assert completed.returncode == 1, completed.stdout
    assert "more than the limit of 1 images per request" in completed.stdout + completed.stderr


def test_verify_in_warn_mode_still_fails_a_failing_image(setup: Setup) -> None:
    config = setup.write_config("warn.yaml", setup.base_config(mode="warn"))
    completed = run_cli(config, "verify", setup.unsigned.reference)
    assert completed.returncode == 1
    assert "result: FAIL: no signature found" in completed.stdout


# ---- check -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Obj:
    kind: str
    name: str
    verdict: str  # allowed | denied | skipped
    object: dict[str, Any]
    document: str  # where it is in the stream: `3`, or `18 items[0]` for an item of a List


# Where each kind carries its unsigned image in the denied variant: every container list is
# proven to be read, through every kind's pod-spec path.
UNSIGNED_LIST = {
    "Pod": "ephemeral", "Deployment": "containers", "ReplicaSet": "init", "StatefulSet": "containers",
    "DaemonSet": "init", "Job": "containers", "CronJob": "init", "ReplicationController": "containers",
}


def manifests(setup: Setup) -> tuple[str, list[Obj]]:
    """A multi-document YAML stream as `helm template` writes it (an empty template gives an empty
    document): every workload kind once denied and once allowed, a ConfigMap, and a List holding
    more objects. Returns the text and the objects in the order they must be reported."""
    signed, unsigned = setup.signed.reference, setup.unsigned.reference
    docs: list[dict[str, Any]] = []
    expected: list[Obj] = []
    first = 1  # after the empty document

    def add(obj: dict[str, Any], verdict: str, document: str | None = None) -> None:
        expected.append(Obj(obj["kind"], obj["metadata"]["name"], verdict, obj,
                            str(first + len(docs)) if document is None else document))

    for kind in KINDS:
        where = UNSIGNED_LIST[kind]
        spec = pod_spec([signed] + ([unsigned] if where == "containers" else []),
                        init=[unsigned] if where == "init" else [],
                        ephemeral=[unsigned] if where == "ephemeral" else [])
        for obj, verdict in ((workload(kind, spec, name=f"{kind.lower()}-unsigned"), "denied"),
                             (workload(kind, pod_spec([signed], init=[setup.public]), name=f"{kind.lower()}-signed"),
                              "allowed")):
            add(obj, verdict)
            docs.append(obj)
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "b"}}
    add(config_map, "skipped")
    docs.append(config_map)
    items = [
        (workload("Pod", pod_spec([unsigned]), name="listed-unsigned"), "denied"),
        (workload("Deployment", pod_spec([signed]), name="listed-signed"), "allowed"),
        ({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}},
         "skipped"),
    ]
    for number, (obj, verdict) in enumerate(items):
        add(obj, verdict, f"{first + len(docs)} items[{number}]")
    docs.append({"apiVersion": "v1", "kind": "List", "items": [obj for obj, _ in items]})
    text = "---\n# Source: chart/templates/empty.yaml\n---\n" + yaml.safe_dump_all(docs, sort_keys=False)
    return text, expected


@dataclass
class Checked:
    text: str
    expected: list[Obj]
    path: Path
    completed: subprocess.CompletedProcess[str]

    def line_for(self, obj: Obj) -> str:
        [line] = [line for line in self.completed.stdout.splitlines() if f" {obj.kind}/{obj.name} (" in line]
        return line


@pytest.fixture(scope="module")
def checked(setup: Setup) -> Checked:
    text, expected = manifests(setup)
    path = setup.directory / "manifests.yaml"
    path.write_text(text)
    return Checked(text, expected, path, run_cli(setup.config, "check", str(path)))


def test_check_prints_one_line_per_object_in_order(checked: Checked) -> None:
    lines = checked.completed.stdout.splitlines()
    assert len(lines) == len(checked.expected), checked.completed.stdout
    for line, obj in zip(lines, checked.expected):
        assert line.startswith(f"{obj.verdict:<8} {obj.kind}/{obj.name} ({checked.path}#{obj.document})"), line


def test_check_exits_1_when_any_object_is_denied(checked: Checked) -> None:
    assert checked.completed.returncode == 1, checked.completed.stderr
    assert checked.completed.stderr == ""


@pytest.mark.parametrize("kind", KINDS + ["List item"])
def test_check_denial_is_the_webhooks_denial(setup: Setup, checked: Checked, kind: str) -> None:
    name = "listed-unsigned" if kind == "List item" else f"{kind.lower()}-unsigned"
    [obj] = [o for o in checked.expected if o.name == name]
    hook = run_request(setup.config, admission_request(obj.object))
    assert hook.allowed is False
    assert setup.unsigned.reference in hook.message
    prefix = f'denied   {obj.kind}/{obj.name} ('
    line = checked.line_for(obj)
    assert line.startswith(prefix)
    assert line.endswith(f': admission webhook "{BINDING}" denied the request: {hook.message}'), (line, hook.message)


@pytest.mark.parametrize("kind", ["Pod", "CronJob"])
def test_check_allowed_objects_are_allowed_by_the_webhook(setup: Setup, checked: Checked, kind: str) -> None:
    [obj] = [o for o in checked.expected if o.verdict == "allowed" and o.kind == kind]
    assert run_request(setup.config, admission_request(obj.object)).response == {"allowed": True}
    assert checked.line_for(obj) == f"allowed  {kind}/{obj.name} ({checked.path}#{obj.document})"


def test_check_exits_0_when_every_object_is_allowed(setup: Setup, checked: Checked) -> None:
    allowed = [o.object for o in checked.expected if o.verdict != "denied"]
    path = setup.directory / "allowed.yaml"
    path.write_text(yaml.safe_dump_all(allowed))
    completed = run_cli(setup.config, "check", str(path))
    assert completed.returncode == 0, completed.stdout
    assert [line.split()[0] for line in completed.stdout.splitlines()] == [
        "allowed" if o.verdict == "allowed" else "skipped" for o in checked.expected if o.verdict != "denied"
    ]


def test_check_reads_stdin_like_a_helm_template_pipe(setup: Setup, checked: Checked) -> None:
    completed = run_cli(setup.config, "check", "-", stdin=checked.text)
    assert completed.returncode == checked.completed.returncode
    assert completed.stdout == checked.completed.stdout.replace(f"({checked.path}#", "(stdin#")


def test_check_json_output_has_allowed_and_message_per_object(setup: Setup, checked: Checked) -> None:
    completed = run_cli(setup.config, "check", str(checked.path), "--output", "json")
    assert completed.returncode == 1
    reports = json.loads(completed.stdout)
    assert [(r["kind"], r["name"]) for r in reports] == [(o.kind, o.name) for o in checked.expected]
    for report, obj in zip(reports, checked.expected):
        assert report["allowed"] is (obj.verdict != "denied")
        assert report["checked"] is (obj.verdict != "skipped")
        if obj.verdict == "denied":
            assert checked.line_for(obj).endswith(f"denied the request: {report['message']}")
        else:
            assert report["message"] == ""


def test_check_several_files_in_one_call(setup: Setup, checked: Checked) -> None:
    allowed = setup.directory / "one-allowed.yaml"
    allowed.write_text(yaml.safe_dump(workload("Job", pod_spec([setup.signed.reference]), name="ok")))
    completed = run_cli(setup.config, "check", str(allowed), str(checked.path))
    assert completed.returncode == 1
    lines = completed.stdout.splitlines()
    assert lines[0] == f"allowed  Job/ok ({allowed}#0)"
    assert len(lines) == 1 + len(checked.expected)


def test_check_warn_mode_prints_warnings_and_allows(setup: Setup, checked: Checked) -> None:
    config = setup.write_config("warn.yaml", setup.base_config(mode="warn"))
    completed = run_cli(config, "check", "-", stdin=yaml.safe_dump(workload("Pod", pod_spec([setup.unsigned.reference]))))
    assert completed.returncode == 0
    warning, verdict = completed.stdout.splitlines()
    assert warning.startswith(f'Warning: signgate (warn mode) would deny: container "c0" image "{setup.unsigned.reference}"')
    assert verdict == "allowed  Pod/app (stdin#0)"


CHECK_INPUT_ERRORS = [
    pytest.param("missing", "cannot read {path}: No such file or directory", id="missing-file"),
    pytest.param("directory", "cannot read {path}: Is a directory", id="directory-instead-of-file"),
    pytest.param("invalid-yaml", "{path}: invalid YAML", id="invalid-yaml"),
    pytest.param("binary", "{path}: not UTF-8 text", id="binary-file"),
    pytest.param("scalar", "{path}#0: not a Kubernetes object (a string)", id="document-that-is-not-an-object"),
    pytest.param("list-item", "{path}#0 items[0]: not a Kubernetes object (an integer)",
                 id="list-item-that-is-not-an-object"),
]


@pytest.mark.parametrize(("case", "expected"), CHECK_INPUT_ERRORS)
def test_check_input_errors_exit_2_with_a_clear_message(setup: Setup, tmp_path: Path, case: str, expected: str) -> None:
    path = tmp_path / "input.yaml"
    if case == "directory":
        path.mkdir()
    elif case == "invalid-yaml":
        path.write_text("kind: Pod\nmetadata: {name: [unclosed\n")
    elif case == "binary":
        path.write_bytes(b"\xff\xfe\x00kind: Pod\n")
    elif case == "scalar":
        path.write_text("this is not a manifest\n")
    elif case == "list-item":
        path.write_text("kind: List\nitems: [1]\n")
    completed = run_cli(setup.config, "check", str(path))
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.startswith("signgate: " + expected.format(path=path)), completed.stderr
    assert "Traceback" not in completed.stderr


def test_check_of_an_object_with_a_malformed_kind_does_not_crash(setup: Setup) -> None:
    completed = run_cli(setup.config, "check", "-", stdin="kind: [Pod]\nmetadata: {name: x}\n")
    assert "Traceback" not in completed.stderr
    assert completed.returncode == 0 and completed.stdout.startswith("skipped  ")


# ---- config ------------------------------------------------------------------------------------------

# (file order, printed order): the README's precedence, one criterion per case.
PRECEDENCE = [
    pytest.param(["registry.example.com/team/*", "registry.example.com/team/app"],
                 ["registry.example.com/team/app", "registry.example.com/team/*"],
                 id="more-literal-segments-first"),
    pytest.param(["registry.example.com/teamname-*", "reg.io/*/app"],
                 ["reg.io/*/app", "registry.example.com/teamname-*"],
                 id="literal-segments-count-before-the-literal-prefix"),
    pytest.param(["registry.example.com/team/*", "registry.example.com/team/a*"],
                 ["registry.example.com/team/a*", "registry.example.com/team/*"],
                 id="then-a-longer-literal-prefix-first"),
    pytest.param(["registry.example.com/**", "registry.example.com/*"],
                 ["registry.example.com/*", "registry.example.com/**"],
                 id="then-fewer-double-stars-first"),
    pytest.param(["registry.example.com/*-*/x", "registry.example.com/*/x"],
                 ["registry.example.com/*/x", "registry.example.com/*-*/x"],
                 id="then-fewer-stars-first"),
    pytest.param(["registry.example.com/b/*", "registry.example.com/a/*"],
                 ["registry.example.com/b/*", "registry.example.com/a/*"],
                 id="then-earlier-in-the-file-first"),
    pytest.param(["**", "docker.io/library/*"], ["docker.io/library/*", "**"], id="catch-all-last"),
    pytest.param(
        ["**", "registry.example.com/**", "docker.io/library/*", "registry.example.com/*/app",
         "registry.example.com/team/*", "registry.example.com/team/app"],
        ["registry.example.com/team/app", "registry.example.com/team/*", "registry.example.com/*/app",
         "docker.io/library/*", "registry.example.com/**", "**"],
        id="a-whole-policy-most-specific-first",
    ),
]


def printed_rules(stdout: str) -> list[tuple[str, str]]:
    """(pattern, label) of each numbered rule line: `  1. PATTERN  [policy[i] (PATTERN)]  ...`."""
    rules = []
    for line in stdout.splitlines():
        head, _, rest = line.strip().partition(". ")
        if head.isdigit():
            pattern, _, rest = rest.partition("  [")
            rules.append((pattern, rest.split("]  ", 1)[0]))
    return rules


@pytest.mark.parametrize(("file_order", "printed_order"), PRECEDENCE)
def test_config_prints_rules_in_match_order(setup: Setup, file_order: list[str], printed_order: list[str]) -> None:
    data = setup.base_config()
    data["policy"] = [{"images": pattern, "keys": ["a"]} for pattern in file_order]
    config = setup.write_config("order.yaml", data)
    completed = run_cli(config, "config")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"configuration {config} is valid\n")
    assert printed_rules(completed.stdout) == [
        (pattern, f"policy[{file_order.index(pattern)}] ({pattern})") for pattern in printed_order
    ]


def test_config_describes_each_rule(setup: Setup) -> None:
    data = setup.base_config(denyLatest=True, mode="warn")
    data["policy"] = [
        {"images": "registry.example.com/prod/**", "keys": ["a", "b"], "threshold": 2, "required": ["a"],
         "annotations": {"env": "prod"}, "checkIdentity": True, "mode": "enforce"},
        {"images": "quay.io/untrusted/**", "action": "deny", "message": "mirror it"},
        {"images": "registry.k8s.io/**", "action": "allow", "denyLatest": False},
    ]
    completed = run_cli(setup.write_config("described.yaml", data), "config")
    assert completed.returncode == 0, completed.stderr
    lines = [line.strip() for line in completed.stdout.splitlines()]
    assert "mode: warn; denyLatest: True; requireDigest: False; unmatched images: deny" in lines
    assert any(line.startswith("1. registry.example.com/prod/**") and line.endswith(
        "verify keys=a,b threshold=2 required=a annotations=env=prod checkIdentity mode=enforce denyLatest") for line in lines)
    assert any(line.endswith("deny message='mirror it' mode=warn denyLatest") for line in lines)
    assert any(line.startswith("3. registry.k8s.io/**") and line.endswith("allow mode=warn") for line in lines)
    assert lines[-1] == "-. anything else: deny"


def test_config_describes_a_notaryv1_rule_by_its_server_root_keys_and_delegations(setup: Setup) -> None:
    # It used to print "verify keys= threshold=1": cosign fields a notaryv1 rule does not read.
    data = setup.base_config()
    data["policy"] = [
        {"images": "registry.example.com/dct/**", "type": "notaryv1",
         "notary": {"server": "https://notary.example.com:4443", "rootKeys": ["a", "b"],
                    "delegations": ["targets/releases", "targets/qa"]}},
        {"images": "registry.example.com/plain/**", "type": "notaryv1",
         "notary": {"server": "https://notary.example.com", "rootKeys": ["b"]}},
    ]
    completed = run_cli(setup.write_config("notary.yaml", data), "config")
    assert completed.returncode == 0, completed.stderr
    lines = [line.strip() for line in completed.stdout.splitlines()]
    assert any("registry.example.com/dct/** " in line and line.endswith(
        "verify type=notaryv1 server=https://notary.example.com:4443 rootKeys=a,b "
        "delegations=targets/releases,targets/qa mode=enforce") for line in lines), lines
    assert any("registry.example.com/plain/** " in line and line.endswith(
        "verify type=notaryv1 server=https://notary.example.com rootKeys=b mode=enforce") for line in lines), lines
    assert not any("keys=" in line or "threshold=" in line for line in lines), lines


CONFIG_ERRORS = [
    pytest.param({"policy": [{"images": "**", "keys": ["a", "b"], "threshold": 3}]},
                 "policy[0].threshold: is 3, but the rule lists only 2 key(s)", id="threshold-above-the-key-count"),
    pytest.param({"polcy": []}, "top level: unknown field 'polcy'", id="unknown-top-level-field"),
    pytest.param({"policy": [{"images": "**", "keys": ["z"]}]}, "policy[0].keys: names unknown key 'z'",
                 id="rule-naming-an-unknown-key"),
    pytest.param({"mode": "audit"}, "mode: must be one of enforce, warn, got 'audit'", id="unknown-mode"),
    pytest.param({"policy": [{"images": "Registry.example.com/**", "action": "allow"}]}, "policy[0].images: ",
                 id="pattern-that-can-never-match"),
]


@pytest.mark.parametrize(("change", "expected"), CONFIG_ERRORS)
def test_invalid_configuration_exits_2_naming_the_field(setup: Setup, change, expected) -> None:
    config = setup.write_config("invalid.yaml", {**setup.base_config(), **change})
    completed = run_cli(config, "config")
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.startswith(f"signgate: {config}: {expected}"), completed.stderr


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param("keys: [unclosed\n", "{path}: invalid YAML at line", id="invalid-yaml"),
        pytest.param(None, "{path}: configuration file not found", id="missing-file"),
    ],
)
def test_unreadable_configuration_exits_2(setup: Setup, tmp_path: Path, raw, expected) -> None:
    path = tmp_path / "config.yaml"
    if raw is not None:
        path.write_text(raw)
    completed = run_cli(path, "config")
    assert completed.returncode == 2
    assert completed.stderr.startswith("signgate: " + expected.format(path=path))


KEY_FILE_ERRORS = [
    pytest.param("missing", "keys.b: key 'b': file {key} not found", id="missing-key-file"),
    pytest.param("private", "keys.b: key 'b': {key} holds a private key", id="private-key-instead-of-public"),
    pytest.param("garbage", "keys.b: key 'b': {key} is not a PEM public key", id="not-a-pem-key"),
]


@pytest.mark.parametrize(("case", "expected"), KEY_FILE_ERRORS)
def test_broken_key_file_exits_2_naming_the_key(setup: Setup, tmp_path: Path, case, expected) -> None:
    key = tmp_path / "b.pub"
    if case == "private":
        key.write_bytes(setup.keys["b"].key_path.read_bytes())
    elif case == "garbage":
        key.write_text("not a key\n")
    data = setup.base_config()
    data["keys"]["b"] = str(key)
    config = setup.write_config("broken-key.yaml", data)
    completed = run_cli(config, "config")
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.startswith(f"signgate: {config}: " + expected.format(key=key)), completed.stderr


@pytest.mark.parametrize("command", [["verify", "quay.io/x/y:1"], ["check", "-"]], ids=["verify", "check"])
@pytest.mark.parametrize(
    ("problem", "expected"),
    [
        pytest.param("invalid", "policy[0].threshold: is 3", id="invalid-configuration"),
        # The hook's --config call refuses such a configuration, so the webhook would never run:
        # no command may answer as if it did (and "image denied", exit 1, would be a lie).
        pytest.param("missing-key", "keys.b: key 'b': file ", id="missing-key-file"),
    ],
)
def test_every_command_refuses_a_configuration_the_hook_would_refuse(setup: Setup, tmp_path: Path, problem,
                                                                      expected, command) -> None:
    data = setup.base_config()
    if problem == "invalid":
        data["policy"] = [{"images": "**", "keys": ["a", "b"], "threshold": 3}]
    else:
        data["keys"]["b"] = str(tmp_path / "absent.pub")
    config = setup.write_config("refused.yaml", data)
    completed = run_cli(config, *command, stdin=yaml.safe_dump(workload("Pod", pod_spec([setup.public]))))
    assert completed.returncode == 2
    assert completed.stdout == ""
    assert completed.stderr.startswith(f"signgate: {config}: {expected}"), completed.stderr


def test_command_is_required(setup: Setup) -> None:
    completed = run_cli(setup.config)
    assert completed.returncode == 2
    assert "usage: signgate" in completed.stderr
