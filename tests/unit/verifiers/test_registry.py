"""The verifier type registry agrees with the configuration, and each type keeps the contract."""

from __future__ import annotations

import inspect

from signgate.config import parse_config
from signgate.errors import ConfigError
from signgate.verifiers import VERIFIERS
from signgate.verifiers.interface import Verifier

CONTRACT = [name for name, _ in inspect.getmembers(Verifier, inspect.isfunction) if not name.startswith("_")]


def test_the_configuration_accepts_exactly_the_registered_types() -> None:
    import pytest

    text = "policy:\n- images: '**'\n  action: allow\n  type: {}\n"
    for name in VERIFIERS:
        if name == "cosign":  # the others need settings of their own; cosign's are optional here
            assert parse_config(text.format(name), "t.yaml").policy[0].type == name
    with pytest.raises(ConfigError, match=r"policy\[0\]\.type: must be one of cosign, notaryv1, got 'x509'"):
        parse_config(text.format("x509"), "t.yaml")


def test_each_verifier_names_its_type_and_implements_every_method_of_the_contract() -> None:
    assert sorted(CONTRACT) == ["describe", "endpoints", "evaluate", "key_names", "parse_settings", "trust_files", "trust_material", "uses_tag"]
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

    schema = json.loads((Path(__file__).resolve().parents[3] / "chart" / "values.schema.json").read_text())
    rule = schema["properties"]["config"]["properties"]["policy"]["items"]["properties"]
    assert sorted(rule["type"]["enum"]) == sorted(VERIFIERS)


# The rule fields every type shares; the rest belong to exactly one verifier type.
COMMON_RULE_FIELDS = {"images", "action", "message", "mode", "denyLatest", "requireDigest", "pinDigest", "type"}


def test_each_rule_field_belongs_to_one_verifier_type_or_to_every_rule() -> None:
    owners: dict[str, str] = {}
    for name, verifier in VERIFIERS.items():
        for field in verifier.fields:
            assert field not in COMMON_RULE_FIELDS, (name, field)
            assert field not in owners, f"{field} is claimed by {owners.get(field)} and {name}"
            owners[field] = name


def test_the_chart_schema_lists_exactly_the_rule_fields_the_verifiers_read() -> None:
    # The schema's rule fields are written by hand; this keeps them equal to what the parsers read.
    import json
    from pathlib import Path

    schema = json.loads((Path(__file__).resolve().parents[3] / "chart" / "values.schema.json").read_text())
    rule = schema["properties"]["config"]["properties"]["policy"]["items"]
    declared = {field for verifier in VERIFIERS.values() for field in verifier.fields} | COMMON_RULE_FIELDS
    assert set(rule["properties"]) == declared
    assert rule.get("additionalProperties") is False
