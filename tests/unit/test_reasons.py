"""Every reason token the code writes is one of `verdict.Reason`: outcomes are tokens, not words.

Decisions, metrics and the fast path branch on these tokens (and on exception types); a token
written somewhere but missing from the list would be a reason nobody can rely on. This reads the
package's source with `ast`, so a new token fails here until it is listed.
"""

from __future__ import annotations

import ast
from pathlib import Path

from signgate.verdict import REASONS

PACKAGE = Path(__file__).resolve().parents[2] / "hooks" / "lib" / "signgate"
# The constructors whose second positional argument is a reason token.
CARRIERS = {"ImageVerdict", "StaticDecision"}


def written_reasons() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}

    def note(value: ast.expr, path: Path) -> None:
        if isinstance(value, ast.Constant) and isinstance(value.value, str):
            found.setdefault(value.value, set()).add(str(path.relative_to(PACKAGE)))

    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
                if name in CARRIERS and len(node.args) >= 2:
                    note(node.args[1], path)
                denial = bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value is False
                for keyword in node.keywords:
                    # A denial's summary is the metric's reason when it has no image results (metrics.py).
                    if keyword.arg == "reason" or (keyword.arg == "summary" and denial):
                        note(keyword.value, path)
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    named = target.id if isinstance(target, ast.Name) else getattr(target, "attr", None)
                    if named == "reason" and node.value is not None:
                        note(node.value, path)
    return found


def test_every_reason_the_code_writes_is_a_listed_token() -> None:
    written = written_reasons()
    assert len(written) > 30  # the scan found the tokens, not nothing
    unlisted = {token: sorted(where) for token, where in written.items() if token not in REASONS}
    assert unlisted == {}


def test_every_listed_token_is_written_somewhere() -> None:
    assert sorted(REASONS - set(written_reasons())) == []
