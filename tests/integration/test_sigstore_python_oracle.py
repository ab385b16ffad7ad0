"""sigstore-python as an independent oracle for signgate's certificate-bundle verification.

`signgate sigstore verify-bundle` judges certificate bundles with the cosign verifier's own code
(certificates.py, the code that judges keyless image signatures), not with sigstore-python. To keep
that code honest, every certificate case of the conformance suite and of the real fixtures is also
given to sigstore-python 4.5.1's `Verifier` (a test dependency, requirements-dev.txt), and the two
must reach the same verdict. Where they do not, the case is listed below with the reason, and the
disagreement itself is asserted, so that a library upgrade that removes it is noticed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from signgate.verifiers.cosign.conformance import (
    Artifact,
    BundleVerificationError,
    IdentityPolicy,
    parse_bundle,
    verify_bundle,
)
from signgate.verifiers.cosign.trust_root import TrustRootError, load_trust_root

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = REPO.parent / "shared" / "fixtures" / "sigstore-conformance"
REAL = REPO.parent / "shared" / "fixtures" / "sigstore-real"

if not (CONFORMANCE / "bundle-verify").is_dir() or not (REAL / "README.md").is_file():
    pytest.skip(
        f"sigstore fixtures not found under {REPO.parent / 'shared' / 'fixtures'} (shared test data, not part of the project)",
        allow_module_level=True,
    )

DEFAULT_IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/"
    ".github/workflows/extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
DEFAULT_ISSUER = "https://token.actions.githubusercontent.com"
GITHUB_OAUTH = "https://github.com/login/oauth"

# Where signgate and sigstore-python 4.5.1 differ, and why; each is asserted to still differ.
DISAGREEMENTS = {
    # The library verifies only hashedrekord and dsse entries ("Integrated time only supported for
    # dsse/hashedrekord 0.0.1 types"); signgate also binds intoto 0.0.2 entries to the signature.
    "intoto-with-custom-trust-root": "signgate passes, the library cannot verify an intoto 0.0.2 entry",
    # The library compares a TSA's validFor.end as exclusive; sigstore-go and the suite, inclusive.
    "trust-root-tsa-validity-end-inclusive": "signgate passes, the library treats validFor.end as exclusive",
}


def _cases() -> list[tuple[str, Path, str, str, Path, Path]]:
    """(id, bundle, identity, issuer, trust root, artifact) for every certificate case."""
    cases = []
    root = CONFORMANCE / "bundle-verify"
    for case in sorted(p for p in root.iterdir() if p.is_dir() and not (p / "key.pub").exists()):
        identity = (case / "identity").read_text().strip() if (case / "identity").is_file() else DEFAULT_IDENTITY
        issuer = (case / "issuer").read_text().strip() if (case / "issuer").is_file() else DEFAULT_ISSUER
        trust = case / "trusted_root.json" if (case / "trusted_root.json").is_file() else CONFORMANCE / "trusted_root.public-good.json"
        artifact = case / "artifact" if (case / "artifact").is_file() else root / "a.txt"
        cases.append((case.name, case / "bundle.sigstore.json", identity, issuer, trust, artifact))
    python = REAL / "sigstore-python"
    for name, identity in (("bundle.txt", "a@tny.town"), ("bundle_v3.txt", "william@yossarian.net"),
                           ("bundle_v3_alt.txt", "william@yossarian.net"), ("bundle_cve_2022_36056.txt", "william@yossarian.net")):
        cases.append((f"real-{name}", python / f"{name}.sigstore", identity, GITHUB_OAUTH, python / "staging-trusted_root.json", python / name))
    return cases


CASES = _cases()


def signgate_verdict(bundle: Path, identity: str, issuer: str, trust: Path, artifact: Path) -> bool:
    data = artifact.read_bytes()
    try:
        verify_bundle(
            parse_bundle(bundle.read_bytes()),
            Artifact(hashlib.sha256(data).digest(), data, hashlib.sha512(data).digest()),
            load_trust_root(str(trust)),
            IdentityPolicy(identity, issuer),
        )
    except (BundleVerificationError, TrustRootError):
        return False
    return True


def library_verdict(bundle: Path, identity: str, issuer: str, trust: Path, artifact: Path) -> bool:
    from sigstore.errors import Error as SigstoreError
    from sigstore.models import Bundle, TrustedRoot
    from sigstore.verify import Verifier
    from sigstore.verify.policy import Identity
    from sigstore_models.trustroot import v1 as trustroot_v1

    logging.getLogger("sigstore").setLevel(logging.CRITICAL)  # it logs what it then raises
    try:
        verifier = Verifier(trusted_root=TrustedRoot(trustroot_v1.TrustedRoot.from_json(trust.read_text())))
        parsed = Bundle.from_json(bundle.read_bytes())
        policy = Identity(identity=identity, issuer=issuer)
        if json.loads(bundle.read_bytes()).get("dsseEnvelope") is not None:
            _, payload = verifier.verify_dsse(parsed, policy)
            digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
            subjects = json.loads(payload).get("subject", [])
            return any(s.get("digest", {}).get("sha256") == digest for s in subjects)
        verifier.verify_artifact(artifact.read_bytes(), parsed, policy)
    except (SigstoreError, ValueError, TypeError, KeyError, AttributeError):
        return False
    return True


def test_the_oracle_sees_both_verdicts() -> None:
    # A broken oracle that always answers the same would agree with half the cases and prove nothing.
    verdicts = {library_verdict(*case[1:]) for case in CASES if case[0] not in DISAGREEMENTS}
    assert verdicts == {True, False}
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", [pytest.param(c, id=c[0]) for c in CASES])
def test_signgate_and_sigstore_python_agree(case: tuple[str, Path, str, str, Path, Path]) -> None:
    name, *arguments = case
    ours, theirs = signgate_verdict(*arguments), library_verdict(*arguments)
    if name in DISAGREEMENTS:
        assert ours != theirs, f"{name} no longer differs ({DISAGREEMENTS[name]}): remove it from DISAGREEMENTS"
        assert ours == (not name.endswith("_fail")), "where the two differ, signgate must be the one that is right"
    else:
        assert ours == theirs, f"{name}: signgate says {ours}, sigstore-python says {theirs}"
