"""The fast path keeps `signgate_trust_material_expiring` current (fastpath.py, hook.trust_refresh).

While every admission is answered from the fast path's entries, the full path (the only one that
parses trust roots) does not run. So when it remembers a pass it records, for each kind of trust
material the image's rule used, the moment from which that kind needs refreshing; the fast path
sets the gauge from those moments and its clock, in the same shape as the full path.

In memory: `hook.run` with a fake verifier decides and remembers the pass, then
`fastpath.try_answer` answers the same request from files, as shell-operator hands them over.
The fast path's clock is moved by replacing its `time` module (the entry is written with a
verdict valid for longer than the move); nothing sleeps.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from signgate import fastpath, hook, metrics
from signgate.config import build_config
from signgate.verdict import ImageVerdict
from support.fulcio import ca_bundle, new_ct_log, new_fulcio, trusted_root
from support.tlog import new_log

DAY = 86400.0
DIGEST = "sha256:" + "cd" * 32
IDENTITY = {"issuer": "https://token.actions.githubusercontent.com",
            "subjectRegExp": r"^https://github\.com/example/app/\.github/workflows/release\.yml@refs/tags/v.*$"}
GAUGE = "signgate_trust_material_expiring"


def stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_root(directory: Path, tlog_end: dt.datetime | None) -> Path:
    """A real trusted_root.json whose one transparency log key ends at `tlog_end` (None: never)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = trusted_root(directory / "root.json", new_fulcio("gauge-fulcio"), [new_ct_log()], [new_log(directory, "rekor.gauge.test")])
    if tlog_end is not None:
        document = json.loads(path.read_text())
        document["tlogs"][0]["publicKey"]["validFor"]["end"] = stamp(tlog_end)
        path.write_text(json.dumps(document))
    return path


def make_key(path: Path) -> Path:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    path.write_bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


class Admissions:
    """One configuration file, one cache directory, and the files shell-operator hands a run."""

    def __init__(self, tmp: Path, data: dict[str, Any]) -> None:
        self.tmp = tmp
        self.raw = json.dumps(data).encode()
        self.config_file = tmp / "config.json"
        self.config_file.write_bytes(self.raw)
        self.config = build_config(data, str(self.config_file), {})
        self.cache = tmp / "cache"
        self.runs = 0

    def context(self, image: str) -> list[dict[str, Any]]:
        spec = {"containers": [{"name": "app", "image": image}]}
        request = {"uid": "u-1", "operation": "CREATE", "kind": {"kind": "Pod"}, "namespace": "team",
                   "object": {"kind": "Pod", "metadata": {"name": "p"}, "spec": spec}}
        return [{"type": "Validating", "binding": "image-signatures.signgate.dev", "review": {"request": request}}]

    def environ(self) -> dict[str, str]:
        self.runs += 1
        return {
            "SIGNGATE_CACHE_DIR": str(self.cache),
            "SIGNGATE_CONFIG": str(self.config_file),
            "BINDING_CONTEXT_PATH": str(self.tmp / f"context-{self.runs}.json"),
            "VALIDATING_RESPONSE_PATH": str(self.tmp / f"response-{self.runs}.json"),
            "METRICS_PATH": str(self.tmp / f"metrics-{self.runs}.jsonl"),
        }

    def full(self, image: str) -> list[dict[str, Any]]:
        """Decide on the full path (a fake verifier passes the image, its verdict valid for 90
        days) and write its metrics; the metric operations it wrote."""
        verdict = ImageVerdict(True, "verified", "", digest=DIGEST, expires_at=time.time() + 90 * DAY)
        environ = self.environ()
        result = hook.run(self.context(image), self.config, cache_dir=str(self.cache),
                          config_digest=fastpath.config_digest(self.raw), verifier=lambda rule, ref: verdict)
        assert result.response is not None and result.response["allowed"] is True, result.log_lines
        assert metrics.write(environ, result.metrics, time.monotonic() + 5)
        return operations(environ)

    def fast(self, image: str) -> tuple[bool, list[dict[str, Any]]]:
        """Offer the request to the fast path: (answered, metric operations written)."""
        environ = self.environ()
        Path(environ["BINDING_CONTEXT_PATH"]).write_text(json.dumps(self.context(image)))
        answered = fastpath.try_answer(environ, time.monotonic())
        if answered:
            assert json.loads(Path(environ["VALIDATING_RESPONSE_PATH"]).read_text()) == {"allowed": True}
        return answered, operations(environ)

    def forget_totals(self) -> None:
        """Drop the metrics totals, which keep the full path's gauges: what the fast path writes
        afterwards is only what it set itself."""
        (self.cache / "m" / "totals.json").unlink()

    def entry(self, image: str) -> Path:
        return Path(fastpath.entry_path(str(self.cache), fastpath.config_digest(self.raw), image))


def operations(environ: dict[str, str]) -> list[dict[str, Any]]:
    path = Path(environ["METRICS_PATH"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def gauges(ops: list[dict[str, Any]]) -> dict[tuple[str, str], int]:
    return {(op["labels"]["name"], op["labels"]["kind"]): op["value"] for op in ops if op["name"] == GAUGE}


def gauge_ops(ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [op for op in ops if op["name"] == GAUGE]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Moves the fast path's wall clock (only its module's view of `time`) by `shift(seconds)`."""

    class Clock:
        offset = 0.0

        def __getattr__(self, name: str) -> Any:
            return getattr(time, name)

        def time(self) -> float:
            return time.time() + self.offset

    fake = Clock()
    monkeypatch.setattr(fastpath, "time", fake)

    def shift(seconds: float) -> None:
        fake.offset = seconds

    return shift


def keyless(tmp: Path, roots: dict[str, Path], authorities: dict[str, Path] | None = None) -> Admissions:
    policy: list[dict[str, Any]] = [
        {"images": f"registry.example/{name}/**", "identities": ["release"], "trustedRoot": name} for name in roots
    ]
    policy += [{"images": f"registry.example/{name}/**", "identities": ["release"], "certificateAuthority": name,
                "ignoreSct": True} for name in authorities or {}]
    return Admissions(tmp, {
        "identities": {"release": IDENTITY},
        "trustedRoots": {name: str(path) for name, path in roots.items()},
        "certificateAuthorities": {name: str(path) for name, path in (authorities or {}).items()},
        "policy": policy,
    })


def test_a_cached_pass_sets_the_trust_gauge_as_the_full_path_did(tmp_path: Path, clock: Any) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    world = keyless(tmp_path, {"public-good": make_root(tmp_path / "roots", now + dt.timedelta(days=40))})
    image = f"registry.example/public-good/app@{DIGEST}"
    full = world.full(image)
    assert gauges(full) == {("public-good", "tlog"): 0, ("public-good", "ctlog"): 0, ("public-good", "ca"): 0}
    world.forget_totals()
    answered, fast = world.fast(image)
    assert answered
    # The same series, operation for operation: name, action, labels (no group) and value.
    assert gauge_ops(fast) == gauge_ops(full)
    assert all(set(op) == {"name", "action", "value", "labels"} for op in gauge_ops(fast))


def test_the_cached_gauge_turns_to_one_once_the_clock_reaches_the_warning_moment(tmp_path: Path, clock: Any) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    end = now + dt.timedelta(days=40)  # needs refreshing from 30 days before: 10 days from now
    world = keyless(tmp_path, {"public-good": make_root(tmp_path / "roots", end)},
                    {"corp": ca_bundle(tmp_path / "corp.pem", end + dt.timedelta(days=5))})
    root_image, ca_image = f"registry.example/public-good/app@{DIGEST}", f"registry.example/corp/app@{DIGEST}"
    world.full(root_image)
    world.full(ca_image)
    moment = (end - dt.timedelta(days=30)).timestamp()

    clock(moment - time.time() - 60)  # a minute before
    answered, before = world.fast(root_image)
    assert answered and gauges(before)[("public-good", "tlog")] == 0

    clock(moment - time.time() + 1)  # just past the moment
    answered, after = world.fast(root_image)
    assert answered
    assert gauges(after)[("public-good", "tlog")] == 1
    # Only the kind whose keys all end: the CA and the CT log of the root have no end.
    assert gauges(after)[("public-good", "ctlog")] == 0 and gauges(after)[("public-good", "ca")] == 0
    # The CA bundle's certificate ends five days later: still 0, then 1 five days on.
    assert gauges(world.fast(ca_image)[1])[("corp", "certificate")] == 0
    clock(moment - time.time() + 5 * DAY + 1)
    answered, later = world.fast(ca_image)
    assert answered and gauges(later)[("corp", "certificate")] == 1


def test_material_already_expiring_is_1_on_both_paths(tmp_path: Path, clock: Any) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    world = keyless(tmp_path, {"stale": make_root(tmp_path / "roots", now + dt.timedelta(days=5))})
    image = f"registry.example/stale/app@{DIGEST}"
    full = world.full(image)
    world.forget_totals()
    answered, fast = world.fast(image)
    assert answered
    assert gauges(fast) == gauges(full) == {("stale", "tlog"): 1, ("stale", "ctlog"): 0, ("stale", "ca"): 0}


def test_material_that_never_ends_stays_0_however_late(tmp_path: Path, clock: Any) -> None:
    world = keyless(tmp_path, {"open": make_root(tmp_path / "roots", None)})
    image = f"registry.example/open/app@{DIGEST}"
    world.full(image)
    entry = json.loads(world.entry(image).read_text())
    assert sorted(entry["trust"]) == [["open", "ca", None], ["open", "ctlog", None], ["open", "tlog", None]]
    clock(80 * DAY)  # still within the entry's lifetime
    answered, fast = world.fast(image)
    assert answered and gauges(fast) == {("open", "tlog"): 0, ("open", "ctlog"): 0, ("open", "ca"): 0}


def old_format(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in entry.items() if key != "trust"} | {"format": 1}


@pytest.mark.parametrize(
    "rewrite",
    [
        old_format,
        lambda e: {k: v for k, v in e.items() if k != "trust"},
        lambda e: {**e, "trust": {"public-good": "tlog"}},
        lambda e: {**e, "trust": [["public-good", "tlog"]]},
        lambda e: {**e, "trust": [["public-good", "tlog", "already"]]},
        lambda e: {**e, "trust": [["public-good", 7, None]]},
        lambda e: {**e, "trust": [["public-good", "tlog", float("nan")]]},
        lambda e: {**e, "trust": [["public-good", "tlog", 10**400]]},
    ],
    ids=["old-format-entry", "trust-missing", "trust-not-a-list", "trust-item-short", "moment-a-word",
         "kind-not-a-string", "moment-nan", "moment-huge"],
)
def test_an_entry_without_valid_trust_moments_is_a_miss_not_a_crash(tmp_path: Path, clock: Any, rewrite: Any) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    world = keyless(tmp_path, {"public-good": make_root(tmp_path / "roots", now + dt.timedelta(days=40))})
    image = f"registry.example/public-good/app@{DIGEST}"
    world.full(image)
    assert world.fast(image)[0], "control: the intact entry answers"
    path = world.entry(image)
    path.write_text(json.dumps(rewrite(json.loads(path.read_text()))))
    answered, ops = world.fast(image)
    assert not answered and ops == []


def test_an_entry_of_the_old_format_under_its_old_name_is_never_found(tmp_path: Path, clock: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry written by the previous release (format 1, no moments) in the same cache."""
    assert fastpath.FORMAT == 2
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    world = keyless(tmp_path, {"public-good": make_root(tmp_path / "roots", now + dt.timedelta(days=40))})
    image = f"registry.example/public-good/app@{DIGEST}"
    world.full(image)
    entry = json.loads(world.entry(image).read_text())
    world.entry(image).unlink()
    with monkeypatch.context() as patch:
        patch.setattr(fastpath, "FORMAT", 1)
        old = Path(fastpath.entry_path(str(world.cache), fastpath.config_digest(world.raw), image))
    old.write_text(json.dumps(old_format(entry)))
    answered, ops = world.fast(image)
    assert not answered and ops == []
    assert old.exists()  # left alone: the cache's own pruning removes it


def test_a_rule_with_keys_only_sets_no_trust_gauge(tmp_path: Path, clock: Any) -> None:
    key = make_key(tmp_path / "cosign.pub")
    world = Admissions(tmp_path, {"keys": {"default": str(key)}, "policy": [{"images": "**"}]})
    image = f"registry.example/team/app@{DIGEST}"
    full = world.full(image)
    assert json.loads(world.entry(image).read_text())["trust"] == []
    answered, fast = world.fast(image)
    assert answered
    assert any(op["name"] == "signgate_cache_total" for op in fast), "control: the fast path wrote its metrics"
    assert gauge_ops(fast) == gauge_ops(full) == []
