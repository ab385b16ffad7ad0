"""Trust-root freshness (issue 16): signgate warns at `--config`, and sets the gauge
`signgate_trust_material_expiring` on admissions, when a trusted root's keys or a CA bundle's
certificates are past or within trust_root.EXPIRY_WARNING of the end of their validity.

Through the hook's contract: `--config` as shell-operator runs it at start-up (its stderr is what
the operator sees), and an admission with $METRICS_PATH and a cache directory.

What must hold:
- a root whose only transparency log key ends in 5 days, or ended, is named with the key's kind
  and the date; a fresh root gives no warning;
- a kind with an ended key beside a current one (a rotation, as in the public-good root) is fine;
- a CA bundle certificate near its notAfter is named by subject and date;
- the gauge is 1 for the kind that needs refreshing and 0 for the others, and goes back to 0 once
  the mounted root is refreshed.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support.contract import request_for, run_config, run_request
from support.fulcio import ca_bundle, new_ct_log, new_fulcio, trusted_root
from support.tlog import new_log

NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
IDENTITY = {"issuer": "https://token.actions.githubusercontent.com",
            "subjectRegExp": r"^https://github\.com/example/app/\.github/workflows/release\.yml@refs/tags/v.*$"}


def stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_root(directory: Path, name: str = "trusted_root.json", *, tlog_end: dt.datetime | None = None,
              old_ctlog_end: dt.datetime | None = None) -> Path:
    """A real trusted_root.json (test Fulcio, CT log, Rekor log). `tlog_end` ends the one
    transparency log key; `old_ctlog_end` adds a rotated-out CT log that ended then."""
    directory.mkdir(parents=True, exist_ok=True)
    path = trusted_root(directory / name, new_fulcio("expiry-fulcio"), [new_ct_log()], [new_log(directory, "rekor.expiry.test")])
    document = json.loads(path.read_text())
    if tlog_end is not None:
        document["tlogs"][0]["publicKey"]["validFor"]["end"] = stamp(tlog_end)
    if old_ctlog_end is not None:
        old = json.loads(json.dumps(document["ctlogs"][0]))
        old["baseUrl"] = "https://ct.test/2021"
        old["publicKey"]["validFor"] = {"start": stamp(old_ctlog_end - dt.timedelta(days=400)), "end": stamp(old_ctlog_end)}
        document["ctlogs"].insert(0, old)
    path.write_text(json.dumps(document, indent=1))
    return path


def write_config(directory: Path, roots: dict[str, Path], authorities: dict[str, Path] | None = None) -> Path:
    policy: list[dict[str, Any]] = [
        {"images": f"127.0.0.1:9/{name}/**", "identities": ["release"], "trustedRoot": name} for name in roots
    ]
    policy += [{"images": f"127.0.0.1:9/{name}/**", "identities": ["release"], "certificateAuthority": name,
                "ignoreSct": True} for name in authorities or {}]
    data = {
        "identities": {"release": IDENTITY},
        "trustedRoots": {name: str(path) for name, path in roots.items()},
        "certificateAuthorities": {name: str(path) for name, path in (authorities or {}).items()},
        "policy": policy,
    }
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def warnings_of(stderr: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("level") == "warn"]


# ---- at --config ---------------------------------------------------------------------------------


def test_a_log_key_ending_in_five_days_is_named_with_its_kind_and_date(tmp_path: Path) -> None:
    end = NOW + dt.timedelta(days=5)
    config = write_config(tmp_path, {"public-good": make_root(tmp_path / "roots", tlog_end=end)})
    completed = run_config(config)
    assert completed.returncode == 0, completed.stderr  # a warning, not a failed start
    [warning] = warnings_of(completed.stderr)
    assert warning["reason"] == "trust-material-expiring"
    message = warning["msg"]
    assert "trustedRoots.public-good" in message
    assert "transparency log key https://rekor.expiry.test" in message
    assert f"valid only until {stamp(end)}" in message and "(5 days)" in message
    # Only the kind that needs refreshing: the CA and the CT log stay valid.
    assert "CT log" not in message and "certificate authority" not in message
    assert yaml.safe_load(completed.stdout)["kubernetesValidating"]  # the binding is still printed


def test_an_ended_log_key_is_named_too(tmp_path: Path) -> None:
    end = NOW - dt.timedelta(days=3)
    config = write_config(tmp_path, {"stale": make_root(tmp_path / "roots", tlog_end=end)})
    completed = run_config(config)
    assert completed.returncode == 0, completed.stderr
    [warning] = warnings_of(completed.stderr)
    assert "trustedRoots.stale" in warning["msg"]
    assert f"transparency log key https://rekor.expiry.test is no longer valid since {stamp(end)}" in warning["msg"]


def test_a_fresh_root_and_a_rotated_out_key_give_no_warning(tmp_path: Path) -> None:
    roots = {
        "fresh": make_root(tmp_path / "fresh"),
        # A CT log that ended a year ago beside its open-ended successor, and a log key that ends
        # in 60 days: nothing to refresh yet.
        "rotated": make_root(tmp_path / "rotated", old_ctlog_end=NOW - dt.timedelta(days=365),
                             tlog_end=NOW + dt.timedelta(days=60)),
    }
    completed = run_config(write_config(tmp_path, roots))
    assert completed.returncode == 0, completed.stderr
    assert warnings_of(completed.stderr) == []


def test_a_ca_bundle_certificate_near_its_not_after_is_named(tmp_path: Path) -> None:
    end = (NOW + dt.timedelta(days=10)).replace(second=0)
    bundle = ca_bundle(tmp_path / "corp.pem", end)
    fresh = ca_bundle(tmp_path / "other.pem", NOW + dt.timedelta(days=900), "other root")
    completed = run_config(write_config(tmp_path, {}, {"corp": bundle, "other": fresh}))
    assert completed.returncode == 0, completed.stderr
    [warning] = warnings_of(completed.stderr)
    assert "certificateAuthorities.corp" in warning["msg"]
    assert f"certificate CN=corp signing root is valid only until {stamp(end)}" in warning["msg"]
    assert "other" not in warning["msg"]


# ---- the gauge, on admissions ----------------------------------------------------------------------


def gauges(metrics: Path) -> dict[tuple[str, str], int]:
    found: dict[tuple[str, str], int] = {}
    for line in metrics.read_text().splitlines():
        op = json.loads(line)
        if op["name"] == "signgate_trust_material_expiring":
            assert op["action"] == "set"
            found[(op["labels"]["name"], op["labels"]["kind"])] = op["value"]
    return found


def admit(config: Path, image: str, tmp_path: Path, run: int) -> dict[tuple[str, str], int]:
    metrics = tmp_path / f"metrics-{run}.jsonl"
    hook = run_request(config, request_for("Pod", [image]),
                       env={"METRICS_PATH": str(metrics), "SIGNGATE_CACHE_DIR": str(tmp_path / "cache")})
    # Nothing listens on 127.0.0.1:9: a denial, but the rule (and its trust root) was used.
    assert hook.returncode == 0 and hook.allowed is False, hook.stderr
    return gauges(metrics)


def test_the_gauge_follows_the_mounted_root(tmp_path: Path) -> None:
    root = make_root(tmp_path / "roots", tlog_end=NOW + dt.timedelta(days=5))
    unused = make_root(tmp_path / "unused", name="unused.json", tlog_end=NOW - dt.timedelta(days=1))
    config = write_config(tmp_path, {"public-good": root, "unused": unused})
    first = admit(config, "127.0.0.1:9/public-good/app:v1", tmp_path, 1)
    assert first == {("public-good", "tlog"): 1, ("public-good", "ctlog"): 0, ("public-good", "ca"): 0}
    # Refreshed in place (as the kubelet updates a ConfigMap volume): the next admission clears it.
    fresh = make_root(tmp_path / "fresh")
    root.write_bytes(fresh.read_bytes())
    assert admit(config, "127.0.0.1:9/public-good/app:v1", tmp_path, 2)[("public-good", "tlog")] == 0
    # The other root is reported once a rule that uses it runs, and the first one's series stays.
    third = admit(config, "127.0.0.1:9/unused/app:v1", tmp_path, 3)
    assert third[("unused", "tlog")] == 1 and third[("public-good", "tlog")] == 0


def test_no_gauge_without_certificate_rules(tmp_path: Path) -> None:
    key = tmp_path / "cosign.pub"
    key.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    config = tmp_path / "keys.yaml"
    config.write_text(yaml.safe_dump({"keys": {"default": str(key)}, "policy": [{"images": "**"}]}))
    assert admit(config, "127.0.0.1:9/team/app:v1", tmp_path, 1) == {}


# ---- the README's worked examples ------------------------------------------------------------------


def test_the_readmes_keyless_examples_pass_the_hooks_config_check(tmp_path: Path) -> None:
    """The registry.k8s.io and GitHub Actions examples are configurations the hook accepts, with
    a trusted root at the path the chart mounts (here relocated under tmp_path)."""
    import re

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    root = make_root(tmp_path / "roots")
    chart_path = "/etc/signgate/trusted-roots/public-good.json"
    examples = {}
    for title in ("### Example: Kubernetes release images", "### Example: a GitHub Actions keyless build"):
        section = readme[readme.index(title):]
        examples[title] = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    for number, (title, text) in enumerate(examples.items()):
        assert chart_path in text, title
        config = tmp_path / f"example-{number}.yaml"
        config.write_text(text.replace(chart_path, str(root)))
        completed = run_config(config)
        assert completed.returncode == 0, (title, completed.stderr)
        assert warnings_of(completed.stderr) == []
    k8s, github = (yaml.safe_load(text) for text in examples.values())
    assert k8s["identities"]["k8s-release"] == {"subject": "krel-trust@k8s-releng-prod.iam.gserviceaccount.com",
                                               "issuer": "https://accounts.google.com"}
    pattern = re.compile(github["identities"]["release-workflow"]["subjectRegExp"])
    assert pattern.search("https://github.com/ORG/REPO/.github/workflows/release.yml@refs/tags/v1.2.3")
    assert not pattern.search("https://github.com/ORG/REPO-evil/.github/workflows/release.yml@refs/tags/v1")
    assert not pattern.search("https://github.com/ORG/REPO/.github/workflows/release.yml@refs/heads/main")
