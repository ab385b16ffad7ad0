"""RFC 3161 timestamps: a verified signing time from a timestamp authority the trust root names.

    verify_timestamp(response, signature, authorities) -> datetime | None   or raises TimestampError

One function for both users: the certificate checks (certificates.py: a chain is checked at the
time a timestamp proves) and the bundle command (conformance.py). rfc3161-client (the library
sigstore-python uses; Rust, on top of `cryptography`) checks the response's CMS signature, that its
message imprint is over `signature`, and the TSA's chain at the stamped time; it is imported only
when a signature carries a timestamp.

A timestamp that is well formed but verifies with none of the authorities returns None: it proves
nothing, and is simply not counted (as sigstore-go and sigstore-python do). Whoever needs a time
then finds none and says so. Only a response that cannot be parsed raises.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Sequence

from .trust_root import Authority

# Deferred imports: rfc3161_client and cryptography.x509 load only when a signature carries a
# timestamp; key-only admissions never pay for them.


class TimestampError(Exception):
    """A timestamp that cannot even be read. `detail` completes "a timestamp ... ", so that each
    caller names where the timestamp was ("it carries", "in the bundle")."""

    def __init__(self, detail: str) -> None:
        super().__init__(f"a timestamp {detail}")
        self.detail = detail


def verify_timestamp(response_der: bytes, signature: bytes, authorities: Sequence[Authority]) -> datetime | None:
    """The generation time of an RFC 3161 response over `signature`, when a trusted TSA signed it
    and the time lies inside that TSA's validity window in the trust root; otherwise None."""
    if not authorities:
        return None
    try:
        import rfc3161_client
    except ImportError:
        raise TimestampError("cannot be verified: rfc3161-client is not installed (see requirements.txt)") from None
    from cryptography import x509

    try:
        response = rfc3161_client.decode_timestamp_response(response_der)
        # A TSA's refusal decodes but holds no token: reading it raises ValueError ("Missing SignedData").
        gen_time = response.tst_info.gen_time
    except Exception as exc:  # ValueError, or the Rust parser's own error types on malformed DER
        raise TimestampError(f"is not an RFC 3161 response ({type(exc).__name__})") from None
    if gen_time.tzinfo is None:
        gen_time = gen_time.replace(tzinfo=timezone.utc)
    for authority in authorities:
        if len(authority.chain_der) < 2:
            continue  # a TSA leaf with no root to anchor it cannot be verified
        try:
            certificates = [x509.load_der_x509_certificate(der) for der in authority.chain_der]
        except ValueError:
            continue
        builder = rfc3161_client.VerifierBuilder().tsa_certificate(certificates[0]).add_root_certificate(certificates[-1])
        for intermediate in certificates[1:-1]:
            builder = builder.add_intermediate_certificate(intermediate)
        try:
            builder.build().verify_message(response, signature)
        except Exception:  # VerificationError; ValueError from certificates the response embeds, which its signature does not cover
            continue  # not verified by this authority: it proves nothing, and counts for nothing
        if authority.validity.contains(gen_time):
            return gen_time
    return None
