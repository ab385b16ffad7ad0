"""Real cosign and signgate on certificate signatures (issue 16). Part 1, private PKI: `cosign sign --key k --certificate
leaf.pem --certificate-chain chain.pem` with a private CA, in both layouts (cosign v2 legacy, cosign
v3 legacy and bundle), judged by `cosign verify --certificate-identity ... --certificate-oidc-issuer
...` with the CA (and `--insecure-ignore-sct --insecure-ignore-tlog`: a private PKI, offline) and by
the signgate hook with a `certificateAuthority` rule (`ignoreSct: true`, `tlog: ignore`).

Part 2, keyless-style: leaves from a Fulcio-shaped test CA with a valid, missing or forged embedded
SCT, judged by `cosign verify --trusted-root` (SCTs checked, tlog ignored) and by a `trustedRoot`
rule. That real cosign accepts the test CT log's SCTs also checks tests/support/fulcio.py.

Each case states the verdict both must reach; the test fails if either differs from it, so cosign
and signgate agree on every case here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support import contract
from support import tools
from support.fulcio import TestFulcio, new_ct_log, new_fulcio, pem, trusted_root
from support.oci import push_image

pytestmark = [pytest.mark.slow, pytest.mark.registry]

PASSWORD = "interop-password"
SUBJECT = "release@corp.example"
ISSUER = "https://issuer.corp.example"
REGISTRY_FLAGS = ["--allow-http-registry", "--allow-insecure-registry"]
SIGNERS = {
    "v2": ("cosign-v2", ["--tlog-upload=false"]),
    "v3-legacy": ("cosign-v3", ["--use-signing-config=false", "--tlog-upload=false", "--new-bundle-format=false"]),
    "v3": ("cosign-v3", ["--use-signing-config=false", "--tlog-upload=false"]),
}
COSIGN_DENIALS = re.compile(r"no matching (signatures|attestations)")
# Why cosign must deny each case (v2 and v3 word it differently), so a harness fault never passes for a denial.
COSIGN_REASONS = {
    "another-identity": re.compile(r"none of the expected identities matched|no matching CertificateIdentity"),
    "a-certificate-of-another-ca": re.compile(r"signed by unknown authority|leaf certificate verification failed"),
}


@dataclass
class Cosign:
    binary: Path
    home: Path

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),  # a private home: no credentials, no TUF cache
            "DOCKER_CONFIG": str(self.home / ".docker"),
            "COSIGN_PASSWORD": PASSWORD,
        }
        completed = subprocess.run([str(self.binary), *args], env=environment, capture_output=True, text=True, timeout=120)
        if check and completed.returncode != 0:
            raise AssertionError(f"cosign {' '.join(args)} failed ({completed.returncode}):\n{completed.stderr}")
        return completed


@dataclass
class Material:
    directory: Path
    key: Path  # cosign's encrypted private key
    leaf: Path  # by the corp CA
    stranger_leaf: Path  # same key, by another CA
    chain: Path  # corp intermediate + root
    stranger_chain: Path
    trusted_root: Path  # the corp CA as a Sigstore trusted root, for cosign v3's verify
    # Keyless-style: a Fulcio-shaped CA with a CT log in a trusted root; leaves by SCT state.
    keyless_root: Path
    keyless_chain: Path
    keyless_leaves: dict[str, Path]


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    directory = tmp_path_factory.mktemp("cosign-certificates")
    (directory / ".docker").mkdir()
    program = "cosign-v3" if tools.path_of("cosign-v3").is_file() else "cosign-v2"
    cosign = Cosign(tools.require(program), directory)
    private = ec.generate_private_key(ec.SECP256R1())
    (directory / "signer.pem").write_bytes(
        private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cosign.run("import-key-pair", "--key", str(directory / "signer.pem"), "--output-key-prefix", str(directory / "signer"))
    corp, stranger = new_fulcio("corp"), new_fulcio("stranger")

    def write(ca: TestFulcio, name: str) -> tuple[Path, Path]:
        leaf = directory / f"{name}-leaf.pem"
        leaf.write_text(pem(ca.issue(private.public_key(), subject=SUBJECT, issuer=ISSUER)))
        chain, _ = ca.write(directory)
        return leaf, chain

    leaf, chain = write(corp, "corp")
    stranger_leaf, stranger_chain = write(stranger, "stranger")
    root = trusted_root(directory / "corp-trusted-root.json", corp)
    fulcio, ct, forger = new_fulcio("keyless"), new_ct_log(), new_ct_log()
    keyless_root = trusted_root(directory / "keyless-trusted-root.json", fulcio, [ct])
    keyless_chain, _ = fulcio.write(directory)
    leaves = {}
    for state, log in (("valid-sct", ct), ("no-sct", None), ("forged-sct", forger)):
        leaves[state] = directory / f"keyless-{state}.pem"
        leaves[state].write_text(pem(fulcio.issue(private.public_key(), subject=SUBJECT, issuer=ISSUER, ct_log=log)))
    return Material(directory, directory / "signer.key", leaf, stranger_leaf, chain, stranger_chain, root, keyless_root, keyless_chain, leaves)


def signed_image(http: Any, repo: str, signer: str, material: Material, leaf: Path, chain: Path) -> str:
    program, flags = SIGNERS[signer]
    cosign = Cosign(tools.require(program), material.directory)
    image = push_image(http, repo, "v1")
    cosign.run("sign", "--key", str(material.key), "--certificate", str(leaf), "--certificate-chain", str(chain),
               *flags, *REGISTRY_FLAGS, "--yes", image.by_digest)
    return image.reference


def cosign_verdict(signer: str, material: Material, reference: str, subject: str) -> tuple[bool, str]:
    program, _ = SIGNERS[signer]
    cosign = Cosign(tools.require(program), material.directory)
    # cosign v2 takes the CA as --certificate-chain; cosign v3.1 dropped that flag for --trusted-root.
    trust = ["--certificate-chain", str(material.chain)] if program == "cosign-v2" else ["--trusted-root", str(material.trusted_root)]
    completed = cosign.run(
        "verify", "--certificate-identity", subject, "--certificate-oidc-issuer", ISSUER, *trust,
        "--insecure-ignore-sct", "--insecure-ignore-tlog=true", *REGISTRY_FLAGS, reference, check=False,
    )
    error = ""
    if completed.returncode != 0:
        error = next((line for line in completed.stderr.splitlines() if line.startswith("Error:")), completed.stderr[-300:])
        assert COSIGN_DENIALS.search(error), f"cosign verify failed for another reason than the signature:\n{completed.stderr}"
    return completed.returncode == 0, error


def signgate_verdict(tmp_path: Path, http: Any, material: Material, reference: str, subject: str) -> contract.HookRun:
    data = {
        "registries": {"insecure": [http.host]},
        "identities": {"release": {"subject": subject, "issuer": ISSUER}},
        "certificateAuthorities": {"corp": str(material.chain)},
        "policy": [{"images": "**", "identities": ["release"], "certificateAuthority": "corp", "ignoreSct": True}],
    }
    path = tmp_path / f"config-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(data))
    run = contract.run_request(path, contract.request_for("Pod", [reference]))
    assert run.returncode == 0 and run.response is not None, run.stderr
    return run


@pytest.mark.parametrize("signer", list(SIGNERS))
@pytest.mark.parametrize(
    "case, allowed",
    [("the-signing-identity", True), ("another-identity", False), ("a-certificate-of-another-ca", False)],
)
def test_cosign_and_signgate_agree_on_certificate_signatures(tmp_path, http, repo, material, signer, case, allowed) -> None:
    leaf, chain = (material.stranger_leaf, material.stranger_chain) if case == "a-certificate-of-another-ca" else (material.leaf, material.chain)
    reference = signed_image(http, repo, signer, material, leaf, chain)
    subject = "someone-else@corp.example" if case == "another-identity" else SUBJECT
    cosign_allowed, cosign_error = cosign_verdict(signer, material, reference, subject)
    assert cosign_allowed is allowed, cosign_error
    if not allowed:
        assert COSIGN_REASONS[case].search(cosign_error), cosign_error
    run = signgate_verdict(tmp_path, http, material, reference, subject)
    assert run.allowed is allowed, run.message
    if case == "another-identity":
        assert f"signed by {SUBJECT} (issuer {ISSUER}), but the rule requires subject someone-else@corp.example" in run.message
    if case == "a-certificate-of-another-ca":
        assert "its certificate does not chain to certificate authority corp" in run.message


# ---- keyless-style: a trusted root with a CT log, SCTs checked by both ----------------------------------

# cosign's words: "does not include required embedded SCT", "only able to verify 0 SCT entries".
SCT_REASON = re.compile(r"embedded SCT|verify 0 SCT entries")


@pytest.mark.parametrize("signer", list(SIGNERS))
@pytest.mark.parametrize("state, allowed", [("valid-sct", True), ("no-sct", False), ("forged-sct", False)])
def test_cosign_and_signgate_agree_on_scts_under_a_trusted_root(tmp_path, http, repo, material, signer, state, allowed) -> None:
    reference = signed_image(http, repo, signer, material, material.keyless_leaves[state], material.keyless_chain)
    program, _ = SIGNERS[signer]
    cosign = Cosign(tools.require(program), material.directory)
    completed = cosign.run(
        "verify", "--certificate-identity", SUBJECT, "--certificate-oidc-issuer", ISSUER, "--trusted-root", str(material.keyless_root),
        "--insecure-ignore-tlog=true", *REGISTRY_FLAGS, reference, check=False,
    )
    assert (completed.returncode == 0) is allowed, completed.stderr
    if not allowed:
        error = next((line for line in completed.stderr.splitlines() if line.startswith("Error:")), completed.stderr)
        assert SCT_REASON.search(error), completed.stderr
    data = {
        "registries": {"insecure": [http.host]},
        "identities": {"release": {"subject": SUBJECT, "issuer": ISSUER}},
        "trustedRoots": {"keyless": str(material.keyless_root)},
        "policy": [{"images": "**", "identities": ["release"], "trustedRoot": "keyless"}],
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    run = contract.run_request(path, contract.request_for("Pod", [reference]))
    assert run.returncode == 0 and run.response is not None, run.stderr
    assert run.allowed is allowed, run.message
    if not allowed:
        assert "SCT" in run.message
