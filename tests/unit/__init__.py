"""Unit tests: no registry, no subprocess, no integration dependencies (`make unit`).

They run with requirements.txt, pytest and hypothesis only, in seconds. tests/conftest.py imports
no test support at import time, so loading it costs them nothing; they use none of its fixtures.
From tests/support they may import only modules that need nothing beyond requirements.txt
(support.contract's request builders; never the registries or the signer).
"""
