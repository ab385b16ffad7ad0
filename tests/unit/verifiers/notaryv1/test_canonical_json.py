"""Canonical JSON as docker/go writes it (what Notary signs), and the strict reader of trust data."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from signgate.verifiers.notaryv1.canonical_json import CanonicalJSONError, canonical_json, parse_json
from signgate.verifiers.notaryv1.errors import InvalidMetadata


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": [True, False, None], "c": {"z": "", "y": -3}}, b'{"a":[true,false,null],"b":1,"c":{"y":-3,"z":""}}'),
        ('quote " backslash \\ tab \t newline \n', b'"quote \\" backslash \\\\ tab \t newline \n"'),
        ("<&> é \u0001", '"<&> é \u0001"'.encode()),  # no HTML or control escapes: raw UTF-8
        ("\u2028\u2029", b'"\\u2028\\u2029"'),  # docker/go escapes these two always
        ({"Z": 0, "a": 0, "é": 0, "\U0001f600": 0, "\uffff": 0}, '{"Z":0,"a":0,"é":0,"\uffff":0,"\U0001f600":0}'.encode()),
        (10**20, b"100000000000000000000"),  # integers in full, never in exponent form
        ((1, "x"), b'[1,"x"]'),
        ({}, b"{}"),
    ],
)
def test_canonical_json_bytes(value: Any, expected: bytes) -> None:
    assert canonical_json(value) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (1.5, "floating point number 1.5"),
        ({"a": 2.0}, "floating point number 2.0"),
        ({1: "x"}, "object keys must be strings"),
        (b"bytes", "unsupported type bytes"),
        ("\ud800", "a string holds a lone surrogate"),
    ],
)
def test_canonical_json_refuses_what_notary_cannot_sign(value: Any, problem: str) -> None:
    with pytest.raises(CanonicalJSONError, match=f"^{problem}$"):
        canonical_json(value)


def test_canonical_json_refuses_deep_nesting() -> None:
    value: Any = 0
    for _ in range(64):
        value = [value]
    assert canonical_json(value) == b"[" * 64 + b"0" + b"]" * 64
    with pytest.raises(CanonicalJSONError, match="nested too deeply"):
        canonical_json([value])


# Control characters stay raw in docker/go's output (only `"` and `\` are escaped), which a strict
# JSON reader refuses: the signed bytes are never read back, so the round trip leaves them out.
text = st.text(st.characters(blacklist_categories=("Cc", "Cs")))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_canonical_json_is_json_that_reads_back_to_the_value(value: Any) -> None:
    encoded = canonical_json(value)
    assert json.loads(encoded) == value
    assert parse_json(encoded, "x") == value
    assert canonical_json(json.loads(encoded)) == encoded  # a fixed point: re-encoding changes nothing


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"a": 1, "a": 2}', "^root.json of g is not valid trust data: duplicate key 'a'$"),
        (b'{"a": 1.0}', "^root.json of g is not valid trust data: number 1.0 is not an integer$"),
        (b'{"a": NaN}', "^root.json of g is not valid trust data: number NaN is not an integer$"),
        (b'{"a": 1e3}', "^root.json of g is not valid trust data: number 1e3 is not an integer$"),
        (b'{"a": "\xff"}', "^root.json of g is not UTF-8$"),
        (b'{"a": ', "^root.json of g is not valid JSON$"),
        (b"[" * 100_000 + b"]" * 100_000, "^root.json of g is not valid JSON$"),  # recursion, not a crash
    ],
)
def test_parse_json_refuses_what_could_be_read_two_ways(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidMetadata, match=message):
        parse_json(raw, "root.json of g")
