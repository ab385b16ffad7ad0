"""Identity matching for certificate signers (certificates.match_identities): exact and regexp
subjects and issuers (regexps searched, as cosign's Go regexp.MatchString), the GitHub Actions
extensions, and messages that say what was found against what was required."""

from __future__ import annotations

from typing import Any

from signgate.verifiers.cosign.certificates import Found, identity_signer, match_identities
from signgate.settings import IdentitySpec

WORKFLOW = "https://github.com/org/repo/.github/workflows/release.yml@refs/tags/v1"
GITHUB = "https://token.actions.githubusercontent.com"
FOUND = Found(WORKFLOW, GITHUB, {"repository": "org/repo", "ref": "refs/tags/v1", "trigger": "push"})


def test_exact_and_regexp_identities_match() -> None:
    exact = IdentitySpec("exact", issuer=GITHUB, subject=WORKFLOW)
    pattern = IdentitySpec("pattern", issuer_regexp=r"^https://token\.actions\.", subject_regexp=r"^https://github\.com/org/")
    assert match_identities(FOUND, [exact, pattern]) == (["exact", "pattern"], None)


def test_an_unanchored_regexp_is_searched_as_cosign_does() -> None:
    assert match_identities(FOUND, [IdentitySpec("loose", issuer=GITHUB, subject_regexp="org/repo")])[0] == ["loose"]


def test_a_mismatch_says_what_was_found_and_what_was_required() -> None:
    wanted = IdentitySpec("release", issuer=GITHUB, subject_regexp=r"^https://github\.com/other/")
    assert match_identities(FOUND, [wanted]) == (
        [], f"signed by {WORKFLOW} (issuer {GITHUB}), but the rule requires subject matching ^https://github\\.com/other/"
    )


def test_with_several_identities_each_requirement_is_named() -> None:
    a = IdentitySpec("a", issuer="https://issuer.a", subject=WORKFLOW)
    b = IdentitySpec("b", issuer=GITHUB, subject="someone@example.com")
    _, message = match_identities(FOUND, [a, b])
    assert message == f"signed by {WORKFLOW} (issuer {GITHUB}), but the rule requires a: issuer https://issuer.a or b: subject someone@example.com"


def test_github_extensions_must_match_when_named() -> None:
    wanted = IdentitySpec("ci", issuer=GITHUB, subject=WORKFLOW, github_workflow_trigger="workflow_dispatch")
    _, message = match_identities(FOUND, [wanted])
    assert message.endswith("but the rule requires GitHub workflow trigger workflow_dispatch (the certificate has push)")
    no_extensions = Found(WORKFLOW, GITHUB, {})
    _, message = match_identities(no_extensions, [IdentitySpec("ci", issuer=GITHUB, subject=WORKFLOW, github_workflow_repository="org/repo")])
    assert message.endswith("GitHub workflow repository org/repo (the certificate has none)")


def test_a_certificate_without_issuer_matches_only_an_issuer_pattern_that_allows_empty() -> None:
    found = Found("release@corp.example", None, {})
    assert match_identities(found, [IdentitySpec("corp", issuer_regexp=".*", subject="release@corp.example")])[0] == ["corp"]
    assert match_identities(found, [IdentitySpec("corp", issuer="https://x", subject="release@corp.example")])[1] == (
        "signed by release@corp.example (issuer none), but the rule requires issuer https://x"
    )


def test_an_identity_signer_counts_by_name() -> None:
    assert identity_signer("release").fingerprint == identity_signer("release").fingerprint != identity_signer("ci").fingerprint


# ---- a bundle's certificate chain --------------------------------------------------------------------


def _self_signed(name: str) -> Any:
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(private.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(hours=1)).sign(private, hashes.SHA256()))


def test_a_bundle_chain_may_not_carry_its_own_root() -> None:
    import pytest

    from signgate.verifiers.cosign.certificates import CertificateProblem, verify_bundle_chain

    with pytest.raises(CertificateProblem, match=r"carries a root certificate \(CN=the root\)"):
        verify_bundle_chain([_self_signed("the root")])
    verify_bundle_chain([])


def test_a_chain_certificate_whose_names_cannot_be_read_is_a_problem_not_a_crash() -> None:
    # cryptography parses names lazily: a certificate loads, and reading its subject then raises.
    import pytest
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    from signgate.verifiers.cosign.certificates import CertificateProblem, verify_bundle_chain

    der = _self_signed("abcdef").public_bytes(serialization.Encoding.DER)
    hostile = x509.load_der_x509_certificate(der.replace(b"abcdef", b"\xff\xfe\xfddef"))
    with pytest.raises(CertificateProblem, match="names cannot be read"):
        verify_bundle_chain([hostile])
