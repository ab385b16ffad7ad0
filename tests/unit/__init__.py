"""Unit tests: no registry, no subprocess, no integration dependencies (`make unit`).

They must pass with tests/conftest.py left out (`--confcutdir=tests/unit`), so they use no fixture
from it and import nothing from tests/support.
"""
