"""Test-only infrastructure for signgate: real registries, token server, TLS material and a
cosign-compatible signer, all bound to 127.0.0.1.

Nothing here is imported by the production code under ``hooks/lib/signgate``; the signer and the
registry client are deliberately independent implementations so that production bugs are not
mirrored by the tests.
"""
