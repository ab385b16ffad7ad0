"""The verifier type registry agrees with the configuration, and each type keeps the contract."""

from __future__ import annotations

import inspect

from signgate.settings import VERIFIER_TYPES
from signgate.verifiers import VERIFIERS
from signgate.verifiers.interface import Verifier

CONTRACT = [name for name, _ in inspect.getmembers(Verifier, inspect.isfunction) if not name.startswith("_")]


def test_the_registry_lists_exactly_the_types_the_configuration_accepts() -> None:
    assert sorted(VERIFIERS) == sorted(VERIFIER_TYPES)


def test_each_verifier_names_its_type_and_implements_every_method_of_the_contract() -> None:
    assert sorted(CONTRACT) == ["describe", "endpoints", "key_names", "trust_files", "verify"]
    for name, verifier in VERIFIERS.items():
        assert verifier.type_name == name
        for method in CONTRACT:
            ours = inspect.signature(getattr(verifier, method))
            theirs = inspect.signature(getattr(Verifier, method))
            assert list(ours.parameters) == [p for p in theirs.parameters if p != "self"], (name, method)


def test_the_chart_schema_lists_exactly_the_registered_types() -> None:
    # helm validates values against the schema before the hook sees them: a type missing there
    # could not be configured through the chart, one left over would pass helm and fail the hook.
    import json
    from pathlib import Path

    schema = json.loads((Path(__file__).resolve().parents[2] / "chart" / "values.schema.json").read_text())
    rule = schema["properties"]["config"]["properties"]["policy"]["items"]["properties"]
    assert sorted(rule["type"]["enum"]) == sorted(VERIFIERS)
