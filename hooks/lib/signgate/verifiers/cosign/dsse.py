"""DSSE: the envelope format of sigstore bundles, and the bytes its signatures cover.

A primitive with no signgate imports, so that the bundle checks, the Rekor checks and the offline
sigstore verifier can all use it without importing one another (docs/architecture.md).
"""

from __future__ import annotations

INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE pre-authentication encoding: what the signature actually covers."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)
