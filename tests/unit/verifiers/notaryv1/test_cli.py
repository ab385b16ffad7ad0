"""`signgate notary root-key`: the comment lines above each printed key, and usage errors."""

from __future__ import annotations

import io
from datetime import timedelta

from signgate.verifiers.notaryv1.cli import describe_root_key, root_key_main
from signgate.verifiers.notaryv1.keys import parse_key
from signgate.verifiers.notaryv1.roles import self_signed_root

from .tuf import GUN, NOW, Collection, ecdsa_key, root_key


def test_a_certificate_root_key_is_described_with_both_ids_and_its_certificate() -> None:
    signer = root_key(not_after=NOW + timedelta(days=30))
    meta, role = self_signed_root(Collection(root=signer).files()["root"], GUN)
    key = role.keys[signer.key_id]
    assert describe_root_key(key, meta, GUN, NOW).splitlines() == [
        f"# root key of {GUN} (root.json version 1, expires 2099-01-01 00:00:00 UTC)",
        f"# key ID {signer.key_id} (ecdsa-x509)",
        f"# canonical key ID {key.canonical_id} (as `notary key list` shows it)",
        f"# certificate for {GUN}, valid until 2030-01-31 00:00:00 UTC",
    ]
    later = describe_root_key(key, meta, GUN, NOW + timedelta(days=31)).splitlines()[-1]
    assert later == "# WARNING: the certificate of root key " + key.canonical_id[:12] + "… expired at 2030-01-31 00:00:00 UTC; signgate will not accept this root"


def test_a_plain_root_key_is_printed_with_a_warning() -> None:
    signer = ecdsa_key()
    meta, _ = self_signed_root(Collection(root=signer).files()["root"], GUN)
    lines = describe_root_key(parse_key(signer.key_id, signer.obj, "root.json"), meta, GUN, NOW).splitlines()
    assert lines[1:] == [
        f"# key ID {signer.key_id} (ecdsa)",
        "# WARNING: not a certificate key; signgate accepts only certificate-wrapped root keys",
    ]


def test_usage_errors_exit_2_before_any_request() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert root_key_main([GUN, "--server", "ftp://notary.example"], out, err) == 2
    assert out.getvalue() == "" and err.getvalue() == "signgate: Notary server 'ftp://notary.example' is not an http(s) URL\n"
    assert root_key_main([GUN], io.StringIO(), io.StringIO()) == 2  # --server is required (argparse says so on stderr)
    assert root_key_main(["--help"], io.StringIO(), io.StringIO()) == 0
