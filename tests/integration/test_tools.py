"""scripts/tools.sh (`make tools`): its contract, checked without building anything.

The real builds take many minutes and are exercised by `make tools` itself (and by every e2e and
interop test that needs their binaries). Here a fake `go` first on PATH stands in for the go
command: it records every call, and fails with a message like the module proxy's refusal. So the
tests see whether the script calls go at all, and what it does when go fails.
"""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import time
from pathlib import Path

import pytest

from support import tools

SCRIPT = tools.ROOT / "scripts" / "tools.sh"

# The order in which `scripts/tools.sh` with no argument builds (control plane first: the e2e
# harness needs it before cosign).
ORDER = ["etcd", "shell-operator", "kubernetes", "cosign-v3", "cosign-v2"]
# The binaries of each program, as named in tests/support/tools.py.
BINARIES = {
    "etcd": ["etcd"],
    "shell-operator": ["shell-operator"],
    "kubernetes": ["kube-apiserver", "kubectl"],
    "cosign-v3": ["cosign-v3"],
    "cosign-v2": ["cosign-v2"],
}
REFUSAL = "reading https://proxy.golang.org/example/@v/v9.9.9.zip: 403 Forbidden (fake go)"

FAKE_GO = f"""#!/bin/bash
# Stands in for the go command: records the call; answers `go env GOVERSION`; fails otherwise.
echo "$*" >>"$FAKE_GO_CALLS"
if [[ "$1 $2" == "env GOVERSION" ]]; then echo go1.26.8; exit 0; fi
echo "go: downloading example v9.9.9"
echo "go: {REFUSAL}" >&2
exit 1
"""


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, str]:
    """An environment with an empty tools cache, its own TMPDIR, and the fake go first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "go"
    fake.write_text(FAKE_GO)
    fake.chmod(0o755)
    (tmp_path / "tmp").mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("GO", "SIGNGATE_TOOLS_DIR")}
    env.update(
        PATH=f"{bin_dir}:/usr/bin:/bin",
        SIGNGATE_TOOLS_DIR=str(tmp_path / "tools"),
        TMPDIR=str(tmp_path / "tmp"),
        FAKE_GO_CALLS=str(tmp_path / "go-calls"),
    )
    return env


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60)


def go_calls(env: dict[str, str]) -> list[str]:
    path = Path(env["FAKE_GO_CALLS"])
    return path.read_text().splitlines() if path.exists() else []


def with_tools_dir(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Points tests/support/tools.py at the sandbox's cache, so path_of() names the same files."""
    monkeypatch.setenv("SIGNGATE_TOOLS_DIR", env["SIGNGATE_TOOLS_DIR"])


def binary_path(name: str) -> Path:
    # BINARIES uses tools.py's program names; cosign-v3 and cosign-v2 are each one program there.
    return tools.path_of(name)


def make_executable(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)


def lock_path(program: str) -> Path:
    key = {"etcd": "ETCD", "shell-operator": "SHELL_OPERATOR", "kubernetes": "KUBERNETES",
           "cosign-v3": "COSIGN_V3", "cosign-v2": "COSIGN_V2"}[program]
    return tools.tools_dir() / f".{program}-{tools.versions()[key]}.lock"


# -- --list ----------------------------------------------------------------------------------------


def test_list_names_every_binary_where_tests_support_tools_looks_for_it(
        sandbox: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with_tools_dir(sandbox, monkeypatch)
    completed = run(sandbox, "--list")
    assert completed.returncode == 0, completed.stderr
    rows = [line.split("\t") for line in completed.stdout.splitlines()]
    versions = tools.versions()
    expected = []
    for program in ORDER:
        for binary in BINARIES[program]:
            key, _ = tools.PROGRAMS[binary]
            expected.append([program, versions[key], str(binary_path(binary)), "missing"])
    assert rows == expected
    assert go_calls(sandbox) == []


def test_list_tells_built_from_missing(sandbox: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with_tools_dir(sandbox, monkeypatch)
    make_executable(binary_path("kubectl"))
    not_executable = binary_path("etcd")
    not_executable.parent.mkdir(parents=True)
    not_executable.write_text("")
    completed = run(sandbox, "--list", "kubectl", "etcd")
    assert completed.returncode == 0, completed.stderr
    states = {Path(row.split("\t")[2]).name: row.split("\t")[3] for row in completed.stdout.splitlines()}
    # kubectl names the kubernetes program: both of its binaries are listed.
    assert states == {"kube-apiserver": "missing", "kubectl": "built", "etcd": "missing"}


# -- names -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["cosign"], ["etcd", "kube-controller-manager"], ["--frobnicate"]])
def test_an_unknown_program_or_option_fails_before_anything_is_built(
        sandbox: dict[str, str], args: list[str]) -> None:
    completed = run(sandbox, *args)
    assert completed.returncode != 0
    bad = args[-1]
    assert f"'{bad}'" in completed.stderr
    if not bad.startswith("-"):
        assert "known: etcd shell-operator kubernetes cosign-v3 cosign-v2" in completed.stderr
    assert go_calls(sandbox) == []
    assert not Path(sandbox["SIGNGATE_TOOLS_DIR"]).exists()


# -- the cache -------------------------------------------------------------------------------------


def test_built_programs_are_not_built_again(sandbox: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with_tools_dir(sandbox, monkeypatch)
    for name in tools.PROGRAMS:
        make_executable(binary_path(name))
    completed = run(sandbox)
    assert completed.returncode == 0, completed.stderr
    cached = [line.split(":")[0] for line in completed.stdout.splitlines() if ": cached (" in line]
    versions = tools.versions()
    assert cached == [f"{p} {versions[tools.PROGRAMS[BINARIES[p][0]][0]]}" for p in ORDER]
    assert go_calls(sandbox) == []


def test_a_program_with_a_binary_missing_is_built_and_a_failure_names_its_cause(
        sandbox: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with_tools_dir(sandbox, monkeypatch)
    # kubectl is there, kube-apiserver is not: kubernetes is not cached.
    make_executable(binary_path("kubectl"))
    completed = run(sandbox, "kubernetes")
    assert completed.returncode != 0
    version = tools.versions()["KUBERNETES"]
    first_line = completed.stderr.splitlines()[0]
    assert first_line.startswith(f"tools.sh: building kubernetes {version} failed: go "), completed.stderr
    assert REFUSAL in completed.stderr
    assert go_calls(sandbox), "the go command was never called"
    # The failed build leaves its log, the directory as it was, and no temporary directory.
    assert (tools.tools_dir() / f"kubernetes-{version}.failed.log").read_text().count(REFUSAL) == 1
    assert sorted(p.name for p in binary_path("kubectl").parent.iterdir()) == ["kubectl"]
    assert not [p for p in tools.tools_dir().iterdir() if p.name.startswith(".build-")]
    assert list(Path(sandbox["TMPDIR"]).iterdir()) == []


@pytest.mark.parametrize("program", ORDER)
def test_each_program_reports_a_go_failure_with_program_version_and_go_output(
        sandbox: dict[str, str], program: str) -> None:
    completed = run(sandbox, program)
    assert completed.returncode != 0
    assert f"building {program} " in completed.stderr and " failed: go " in completed.stderr
    assert REFUSAL in completed.stderr
    assert "built in" not in completed.stdout
    assert not [p for p in Path(sandbox["SIGNGATE_TOOLS_DIR"]).iterdir() if not p.name.startswith(".")
                and not p.name.endswith(".failed.log")]


# -- the lock --------------------------------------------------------------------------------------


def test_a_second_call_waits_for_the_first_and_then_finds_the_program_built(
        sandbox: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    with_tools_dir(sandbox, monkeypatch)
    lock = lock_path("etcd")
    lock.parent.mkdir(parents=True)
    # This test plays the first call: it holds etcd's lock while "building".
    with open(lock, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        second = subprocess.Popen([str(SCRIPT), "etcd"], env=sandbox, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            line = _read_line(second, deadline=30)
            assert "waiting for" in line, line
            assert second.poll() is None, "the second call did not wait for the lock"
            make_executable(binary_path("etcd"))
        finally:
            fcntl.flock(held, fcntl.LOCK_UN)
        out, err = second.communicate(timeout=30)
    assert second.returncode == 0, err
    assert f"etcd {tools.versions()['ETCD']}: cached (" in out
    assert go_calls(sandbox) == []


def _read_line(process: subprocess.Popen[str], deadline: float) -> str:
    assert process.stdout is not None
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        ready, _, _ = select.select([process.stdout], [], [], 0.5)
        if ready:
            return process.stdout.readline()
        if process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"no output from tools.sh; stderr: {process.stderr.read() if process.stderr else ''}")
