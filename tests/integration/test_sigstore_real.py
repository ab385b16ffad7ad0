"""Bundles and trust roots made by real Sigstore clients, through `signgate sigstore verify-bundle`.

Data: `../shared/fixtures/sigstore-real` (its README names each file's source and the verdict the
source repository's own tests assert). Each case here reaches that verdict, offline.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO.parent / "shared" / "fixtures" / "sigstore-real"

if not (FIXTURES / "README.md").is_file():
    pytest.skip(
        f"sigstore-real fixtures not found at {FIXTURES} (they are shared test data, not part of the project)",
        allow_module_level=True,
    )

PY = FIXTURES / "sigstore-python"
GITHUB_OAUTH = "https://github.com/login/oauth"

# (id, bundle, policy arguments, trust root, artifact, expected exit code, expected reason or None)
CASES = [
    ("sigstore-python-bundle-v0.1", PY / "bundle.txt.sigstore",
     ["--certificate-identity", "a@tny.town", "--certificate-oidc-issuer", GITHUB_OAUTH],
     PY / "staging-trusted_root.json", str(PY / "bundle.txt"), 0, None),
    ("sigstore-python-bundle-v0.3", PY / "bundle_v3.txt.sigstore",
     ["--certificate-identity", "william@yossarian.net", "--certificate-oidc-issuer", GITHUB_OAUTH],
     PY / "staging-trusted_root.json", str(PY / "bundle_v3.txt"), 0, None),
    ("sigstore-python-bundle-v0.3-alt-media-type", PY / "bundle_v3_alt.txt.sigstore",
     ["--certificate-identity", "william@yossarian.net", "--certificate-oidc-issuer", GITHUB_OAUTH],
     PY / "staging-trusted_root.json", str(PY / "bundle_v3_alt.txt"), 0, None),
    # CVE-2022-36056: a valid log entry for another signature pasted into the bundle.
    ("sigstore-python-cve-2022-36056", PY / "bundle_cve_2022_36056.txt.sigstore",
     ["--certificate-identity", "william@yossarian.net", "--certificate-oidc-issuer", GITHUB_OAUTH],
     PY / "staging-trusted_root.json", str(PY / "bundle_cve_2022_36056.txt"), 1, "tlog-entry-mismatch"),
    # A key-signed npm publish attestation (DSSE, Rekor intoto 0.0.2, a TSA timestamp): signgate's own
    # path. Its only subject digest is SHA-512.
    ("sigstore-go-publish-attestation", FIXTURES / "sigstore-go" / "bundle-publish.json",
     ["--key", str(FIXTURES / "sigstore-go" / "publish_key.pub")],
     FIXTURES / "sigstore-go" / "trusted-root-public-good.json",
     "sha512:76176ffa33808b54602c7c35de5c6e9a4deb96066dba6533f50ac234f4f1f4c6b3527515dc17c06fbe2860030f410eee69ea20079bd3a2c6f3dcf3b329b10751",
     0, None),
    ("cosign-keyless-attestation", FIXTURES / "cosign" / "oci-attestation.sigstore.json",
     ["--certificate-identity", "cody@soyland.com", "--certificate-oidc-issuer", GITHUB_OAUTH],
     FIXTURES / "cosign" / "trusted_root_pgi.json",
     "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4", 0, None),
    # The same real bundles, judged against what they are not.
    ("cosign-keyless-attestation-other-digest", FIXTURES / "cosign" / "oci-attestation.sigstore.json",
     ["--certificate-identity", "cody@soyland.com", "--certificate-oidc-issuer", GITHUB_OAUTH],
     FIXTURES / "cosign" / "trusted_root_pgi.json", "sha256:" + "0" * 64, 1, "artifact-mismatch"),
    ("cosign-keyless-attestation-other-identity", FIXTURES / "cosign" / "oci-attestation.sigstore.json",
     ["--certificate-identity", "someone@else.example", "--certificate-oidc-issuer", GITHUB_OAUTH],
     FIXTURES / "cosign" / "trusted_root_pgi.json",
     "sha256:732112270d7e59418a8c080b134b24cabd67d250d0d0147a97ed95ba5c280aa4", 1, "identity-mismatch"),
    ("sigstore-python-bundle-against-public-good-root", PY / "bundle_v3.txt.sigstore",
     ["--certificate-identity", "william@yossarian.net", "--certificate-oidc-issuer", GITHUB_OAUTH],
     FIXTURES / "sigstore-go" / "trusted-root-public-good.json", str(PY / "bundle_v3.txt"), 1, None),
    ("sigstore-go-publish-attestation-wrong-key", FIXTURES / "sigstore-go" / "bundle-publish.json",
     ["--key", str(FIXTURES / "sigstore-go" / "publish_key.pub")],
     FIXTURES / "sigstore-go" / "trusted-root-public-good.json", "sha256:" + "0" * 64, 1, "artifact-mismatch"),
]


@pytest.mark.parametrize(
    "bundle,policy,root,artifact,code,reason",
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_real_bundle(bundle: Path, policy: list[str], root: Path, artifact: str, code: int, reason: str | None) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO / "hooks" / "lib")}
    command = [sys.executable, "-m", "signgate", "sigstore", "verify-bundle", "--bundle", str(bundle), *policy,
               "--trusted-root", str(root), artifact]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == code, result.stderr
    if code == 0:
        assert result.stdout.startswith("OK: verified for "), result.stdout
    else:
        assert len(result.stderr.splitlines()) == 1, result.stderr
        if reason:
            assert result.stderr.startswith(f"FAIL ({reason}): "), result.stderr
