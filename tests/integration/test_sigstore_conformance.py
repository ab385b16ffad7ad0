"""The sigstore-conformance bundle-verify cases, each through `signgate sigstore verify-bundle`.

The cases are the upstream suite's data (`../shared/fixtures/sigstore-conformance`, see its README):
the expected result is in the folder name (`_fail` must fail, anything else must pass); a case
folder may bring its own `key.pub`, `identity`, `issuer`, `artifact` and `trusted_root.json`, and
otherwise the suite's defaults apply, with the public-good trust root snapshot beside the cases.
Every case runs as the conformance harness runs a client: a subprocess, judged by its exit code,
here also with every socket connection recorded and refused (verification is offline).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.hostile import ConnectionAudit

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / "shared" / "fixtures" / "sigstore-conformance"
CASES_DIR = FIXTURES / "bundle-verify"

if not CASES_DIR.is_dir():
    pytest.skip(
        f"sigstore-conformance fixtures not found at {FIXTURES} (they are shared test data, not part of the project)",
        allow_module_level=True,
    )

DEFAULT_IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
DEFAULT_ISSUER = "https://token.actions.githubusercontent.com"
PUBLIC_GOOD = FIXTURES / "trusted_root.public-good.json"

# Cases signgate cannot pass yet, each with the precise reason. strict: the day one passes, the
# marker must go.
KNOWN_FAILURES = {
    "intoto-with-custom-trust-root": (
        "certificate bundle whose log entry is intoto 0.0.2: sigstore-python 4.5.1's Verifier supports "
        "only hashedrekord and dsse entries ('Integrated time only supported for dsse/hashedrekord 0.0.1 "
        "types'); signgate's own path checks intoto 0.0.2 entries only for key-signed bundles"
    ),
}

CASES = sorted(path.name for path in CASES_DIR.iterdir() if path.is_dir())


def case_command(case: Path) -> list[str]:
    """The harness's command line for one case folder."""
    command = [sys.executable, "-m", "signgate", "sigstore", "verify-bundle", "--bundle", str(case / "bundle.sigstore.json")]
    if (case / "key.pub").is_file():
        command += ["--key", str(case / "key.pub")]
    else:
        identity = (case / "identity").read_text().strip() if (case / "identity").is_file() else DEFAULT_IDENTITY
        issuer = (case / "issuer").read_text().strip() if (case / "issuer").is_file() else DEFAULT_ISSUER
        command += ["--certificate-identity", identity, "--certificate-oidc-issuer", issuer]
    root = case / "trusted_root.json"
    command += ["--trusted-root", str(root if root.is_file() else PUBLIC_GOOD)]
    artifact = case / "artifact"
    command.append(str(artifact if artifact.is_file() else CASES_DIR / "a.txt"))
    return command


def _params() -> list[object]:
    params = []
    for name in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_FAILURES[name])] if name in KNOWN_FAILURES else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> ConnectionAudit:
    return ConnectionAudit(tmp_path_factory.mktemp("sigstore-audit"))


def test_every_case_folder_is_run() -> None:
    # The suite's case count at the pinned commit: a folder that fails to be listed would otherwise
    # shrink the run silently.
    assert len(CASES) == 70, CASES
    assert sum(name.endswith("_fail") for name in CASES) == 49


@pytest.mark.parametrize("name", _params())
def test_conformance_case(name: str, audit: ConnectionAudit) -> None:
    case = CASES_DIR / name
    expect_pass = not name.endswith("_fail")
    audit.clear()
    env = {**os.environ, **audit.env}
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(REPO / "hooks" / "lib")])
    result = subprocess.run(case_command(case), capture_output=True, text=True, env=env, timeout=120)
    assert audit.connections() == [], f"verification tried to connect: {audit.connections()}"
    if expect_pass:
        assert result.returncode == 0, f"{name} must verify: {result.stderr.strip()}"
        assert result.stdout.startswith("OK: verified for ")
        assert result.stderr == ""
    else:
        # 1, not 2: a refused bundle, never a usage error or a crash (a traceback would be exit 1
        # too, so the reason line is checked as well).
        assert result.returncode == 1, f"{name} must fail with exit 1: rc={result.returncode} {result.stderr.strip()}"
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("FAIL ("), result.stderr
