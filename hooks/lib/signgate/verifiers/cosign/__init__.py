"""The cosign verifier type: legacy `.sig` signatures and sigstore bundles, with keys or
certificates, and their transparency proofs (docs/architecture.md, "The cosign package").
"""

from .verifier import CosignVerifier

__all__ = ["CosignVerifier"]
