"""notaryv1: Docker Content Trust (Notary v1) verification against pinned root keys.

The package follows the data: `transport` fetches TUF files from the Notary server through the
registry client; `canonical_json`, `keys` and `metadata` read and check one signed file;
`roles` chains root -> timestamp -> snapshot -> targets -> delegations; `trust_data` holds one
GUN's verified collection; `decision` asks it whether the served manifest is signed; `verifier`
is the rule's flow and the verifier contract; `cli` is `signgate notary root-key`; `errors` the
NotaryError family.

Only `verifier` (light) is imported here: the type registry loads it with the configuration, and
the rest loads when a notaryv1 rule applies.
"""

from .verifier import NotarySettings, NotaryV1Verifier

__all__ = ["NotarySettings", "NotaryV1Verifier"]
