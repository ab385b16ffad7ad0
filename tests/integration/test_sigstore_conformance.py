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

# Why each `_fail` case must fail, as the reason token on the FAIL line (verdict.Reason's
# vocabulary of the command, conformance.Reason): a case refused for another reason than its own
# would hide a missing check behind an unrelated one.
EXPECTED_REASONS = {
    "bundle-empty-certificate-chain_fail": "malformed-bundle",
    "bundle-from-wrong-instance_fail": "tlog-untrusted",
    "bundle-invalid-base64-signature_fail": "malformed-bundle",
    "bundle-malformed-json_fail": "malformed-bundle",
    "bundle-negative-log-index_fail": "malformed-bundle",
    "bundle-unknown-version_fail": "unknown-media-type",
    "bundle-with-root-cert_fail": "certificate-invalid",
    "checkpoint-bad-keyhint_fail": "tlog-proof-invalid",
    "checkpoint-wrong-roothash_fail": "tlog-proof-invalid",
    "dsse-invalid-sig_fail": "signature-invalid",
    "dsse-mismatch-envelope_fail": "tlog-entry-mismatch",
    "dsse-mismatch-sig_fail": "tlog-entry-mismatch",
    "inclusion-proof-corrupted-hash_fail": "tlog-proof-invalid",
    "incorrect-public-key_fail": "tlog-entry-mismatch",
    # the integrated time lies outside the certificate's validity, so the chain does not verify at it
    "integrated-time-in-future_fail": "certificate-invalid",
    "intoto-expired-certificate_fail": "certificate-invalid",
    "intoto-log-entry-mismatch_fail": "tlog-entry-mismatch",
    "intoto-missing-inclusion-proof_fail": "tlog-entry-missing",
    "intoto-set-outside-signing-cert-validity_fail": "certificate-invalid",
    "intoto-tsa-timestamp-outside-cert-validity_fail": "certificate-invalid",
    "invalid-checkpoint-signature_fail": "tlog-proof-invalid",
    "invalid-ct-key_fail": "certificate-invalid",
    "invalid-inclusion-proof_fail": "tlog-proof-invalid",
    "managed-key-no-key_fail": "wrong-verification-material",
    # its key.pub is not a usable PEM public key
    "managed-key-wrong-key_fail": "wrong-verification-material",
    "message-digest-mismatch_fail": "artifact-mismatch",
    "rekor2-checkpoint-missing-log-signature_fail": "tlog-proof-invalid",
    "rekor2-checkpoint-missing-origin_fail": "tlog-proof-invalid",
    "rekor2-checkpoint-missing-root-hash_fail": "tlog-proof-invalid",
    "rekor2-checkpoint-missing-size_fail": "tlog-proof-invalid",
    "rekor2-checkpoint-no-matching-signature_fail": "tlog-proof-invalid",
    "rekor2-dsse-invalid-sig_fail": "signature-invalid",
    "rekor2-dsse-mismatch-envelope_fail": "tlog-entry-mismatch",
    "rekor2-dsse-mismatch-sig_fail": "tlog-entry-mismatch",
    "rekor2-no-inclusion-proof_fail": "tlog-entry-missing",
    "rekor2-no-timestamp_fail": "no-verified-time",
    "rekor2-timestamp-outside-trust-root-tsa-validity_fail": "no-verified-time",
    "rekor2-timestamp-outside-tsa-cert-validity_fail": "no-verified-time",
    "rekor2-timestamp-payload-mismatch_fail": "no-verified-time",
    # FreeTSA's response is BER (unsorted SET), which the DER parser refuses before the untrusted TSA is reached; either way no time
    "rekor2-timestamp-untrusted-tsa-with-embedded-cert_fail": "timestamp-invalid",
    "rekor2-timestamp-untrusted-tsa-without-embedded-cert_fail": "no-verified-time",
    # its timestamp's base64 is wrapped across lines (the case was made with `base64`); the strict decoder refuses it before its time (outside the certificate's lifetime) is checked
    "rekor2-timestamp-with-incorrect-time_fail": "malformed-bundle",
    "set-invalid-signature_fail": "tlog-proof-invalid",
    "signature-mismatch_fail": "signature-invalid",
    "trust-root-tlog-missing-validity-start_fail": "trust-root",
    "wrong-hashedrekord-artifact_fail": "tlog-entry-mismatch",
    "wrong-hashedrekord-cert-and-sig_fail": "tlog-entry-mismatch",
    "wrong-hashedrekord-entry_fail": "tlog-entry-mismatch",
    "wrong-material_fail": "artifact-mismatch",
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


@pytest.fixture(scope="module")
def audit(tmp_path_factory: pytest.TempPathFactory) -> ConnectionAudit:
    return ConnectionAudit(tmp_path_factory.mktemp("sigstore-audit"))


def test_every_case_folder_is_run() -> None:
    # The suite's case count at the pinned commit: a folder that fails to be listed would otherwise
    # shrink the run silently.
    assert len(CASES) == 70, CASES
    assert sum(name.endswith("_fail") for name in CASES) == 49
    assert sorted(EXPECTED_REASONS) == [name for name in CASES if name.endswith("_fail")]


@pytest.mark.parametrize("name", CASES)
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
        assert len(lines) == 1 and lines[0].startswith(f"FAIL ({EXPECTED_REASONS[name]}): "), result.stderr
