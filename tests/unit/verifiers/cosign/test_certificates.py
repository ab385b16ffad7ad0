"""Identity matching for certificate signers (certificates.match_identities): exact and regexp
subjects and issuers (regexps searched, as cosign's Go regexp.MatchString), the GitHub Actions
extensions, and messages that say what was found against what was required."""

from __future__ import annotations

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
