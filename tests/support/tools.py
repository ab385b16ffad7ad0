"""Where the real programs built by `make tools` (scripts/tools.sh) live, for the e2e and interop tests.

Layout: ``$SIGNGATE_TOOLS_DIR`` (default ``~/.cache/signgate/tools``) holds one directory per
program and version, ``<program>-<version>/<binary>``, so that a version bump builds anew and a
second ``make tools`` does nothing. Under ``CI=true`` a missing program fails the test: CI builds
every tool itself, so a skip there would hide a broken build. Elsewhere it skips and says why.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSIONS_FILE = ROOT / "scripts" / "versions.env"

# program name -> (versions.env key, binary name inside <program>-<version>/)
PROGRAMS = {
    "cosign-v3": ("COSIGN_V3", "cosign"),
    "cosign-v2": ("COSIGN_V2", "cosign"),
    "shell-operator": ("SHELL_OPERATOR", "shell-operator"),
    "kube-apiserver": ("KUBERNETES", "kube-apiserver"),
    "kubectl": ("KUBERNETES", "kubectl"),
    "etcd": ("ETCD", "etcd"),
}


def versions() -> dict[str, str]:
    out = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def tools_dir() -> Path:
    configured = os.environ.get("SIGNGATE_TOOLS_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "signgate" / "tools"


def directory_name(program: str) -> str:
    key, _ = PROGRAMS[program]
    # kube-apiserver and kubectl come from one Kubernetes build, in one directory.
    stem = "kubernetes" if key == "KUBERNETES" else program
    return f"{stem}-{versions()[key]}"


def path_of(program: str) -> Path:
    """The binary's path, whether or not it has been built."""
    _, binary = PROGRAMS[program]
    return tools_dir() / directory_name(program) / binary


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(program: str) -> Path:
    """The built program, or a skip (a failure under CI=true) that says how to build it."""
    path = path_of(program)
    if path.is_file() and os.access(path, os.X_OK):
        return path
    reason = f"{program} is not built ({path} is missing): run `make tools`"
    if in_ci():
        pytest.fail(reason + " (CI=true: a missing tool is a failure, not a skip)", pytrace=False)
    pytest.skip(reason)
