"""One verb, one behaviour, across the package (docs/architecture.md, "Verbs").

- `verify_*` returns normally (with what it verified, if anything) or raises a SigngateError
  that carries a reason; it never answers with a bool, a problem string or a verdict;
- `check_*` returns what is wrong (a problem, a list of problems, or an outcome that holds its
  problem) and never raises for the condition it checks, so it cannot be declared to return None;
- `evaluate*` (and a verifier's `evaluate`) returns an `ImageVerdict` and raises nothing.

This reads the return annotations with `ast`: a function whose name promises one behaviour and
whose annotation promises another fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "hooks" / "lib" / "signgate"


def functions() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                returns = ast.unparse(node.returns) if node.returns is not None else ""
                found.append((f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}", node.name.lstrip("_"), returns.strip("'\"")))
    return found


def test_the_scan_sees_the_package() -> None:
    verbs = {name.split("_")[0] for _, name, _ in functions()}
    assert {"verify", "check", "evaluate"} <= verbs


def test_check_functions_return_their_problems() -> None:
    wrong = [(where, returns) for where, name, returns in functions() if name.startswith("check_") and returns in ("", "None")]
    assert wrong == []


def test_verify_functions_return_normally_or_raise() -> None:
    answers = ("bool", "str | None", "ImageVerdict", "Optional[str]")
    wrong = [
        (where, returns)
        for where, name, returns in functions()
        if (name == "verify" or name.startswith("verify_")) and returns in answers
    ]
    assert wrong == []


def test_evaluate_functions_return_a_verdict() -> None:
    wrong = [
        (where, returns)
        for where, name, returns in functions()
        if (name == "evaluate" or name.startswith("evaluate_")) and returns != "ImageVerdict"
    ]
    assert wrong == []
