"""`signgate notary root-key GUN --server URL [--ca FILE]`: the root public key(s) of a trust
collection, as PEM to pin in a notaryv1 rule.

An edge (docs/architecture.md places it with the other command lines): signgate/cli.py hands it
the arguments after `notary root-key`; nothing in the verifier imports it.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from typing import TextIO

from ...deadline import Deadline
from ...errors import SigngateError
from ...settings import Limits
from .errors import InvalidMetadata, NoTrustData
from .keys import TufKey
from .metadata import Metadata, format_time
from .roles import certificate_problem, common_names, self_signed_root
from .transport import NotaryFetcher


def root_key_main(argv: list[str], out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Print the root public key(s) of a trust collection, as PEM to pin, each preceded by `#`
    lines with its key IDs.

    The `#` lines are ignored by PEM readers, so the output can be saved as the key file. The key
    is read from the server without any trust (that is what pinning ends): compare the canonical
    ID with `notary key list` on the signer's machine before pinning it.

    `argv` holds the arguments after `notary root-key`. Exit 0 on success, 2 on any error.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    parser = argparse.ArgumentParser(
        prog="signgate notary root-key",
        description="Print the root public key of a Notary trust collection in PEM, to pin in a notaryv1 rule.",
    )
    parser.add_argument("gun", metavar="GUN", help="the trust collection, <registry>/<repository>, e.g. docker.io/library/nginx")
    parser.add_argument("--server", required=True, help="the Notary server URL, e.g. https://notary.docker.io")
    parser.add_argument("--ca", help="CA bundle for the Notary server's TLS (default: the system CAs)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return 0 if exc.code == 0 else 2
    try:
        fetch = NotaryFetcher(args.server, args.gun, deadline=Deadline(args.timeout), limits=Limits(), ca_bundle=args.ca)
        try:
            raw = fetch("root", Limits().max_manifest_bytes)
        finally:
            fetch.close()
        if raw is None:
            raise NoTrustData(f"the Notary server {args.server} has no trust data for {args.gun}")
        meta, role = self_signed_root(raw, args.gun)
        now = datetime.now(timezone.utc)
        printed = 0
        for key_id in role.key_ids:
            key = role.keys.get(key_id)
            if key is None or key.key is None:
                continue
            out.write(describe_root_key(key, meta, args.gun, now))
            out.write(key.public_pem().decode())
            printed += 1
        if not printed:
            raise InvalidMetadata(f"root.json of {args.gun} names no usable root key")
        if printed > 1:
            err.write(f"signgate: {args.gun} has {printed} root keys; save each PEM block to its own file to pin it\n")
        return 0
    except SigngateError as exc:
        err.write(f"signgate: {exc}\n")
        return 2


def describe_root_key(key: TufKey, meta: Metadata, gun: str, now: datetime) -> str:
    """The `#` lines printed above a root key's PEM: its IDs, certificate and usability."""
    lines = [
        f"# root key of {gun} (root.json version {meta.version}, expires {format_time(meta.expires)})",
        f"# key ID {key.key_id} ({key.keytype})",
    ]
    if key.certificate is not None:
        lines.append(f"# canonical key ID {key.canonical_id} (as `notary key list` shows it)")
        names = common_names(key.certificate)
        lines.append(
            f"# certificate for {names[0] if names else '(no common name)'}, valid until "
            f"{format_time(key.certificate.not_valid_after_utc)}"
        )
        unusable = certificate_problem(key, gun, now)
        if unusable:
            lines.append(f"# WARNING: {unusable[1]}; signgate will not accept this root")
    else:
        lines.append("# WARNING: not a certificate key; signgate accepts only certificate-wrapped root keys")
    return "\n".join(lines) + "\n"
