"""Canonical JSON, what Notary signs, and the strict JSON reader for trust data.

docker/go's canonical encoder: keys sorted, no whitespace, only `"` and `\\` escaped (plus
U+2028/U+2029), integers only.
"""

from __future__ import annotations

import json
from typing import Any

from ...encoding import unique_keys
from .errors import InvalidMetadata


class CanonicalJSONError(ValueError):
    pass


def canonical_json(value: Any) -> bytes:
    """The bytes Notary signs for `value` (docker/go canonical JSON).

    Objects with keys sorted by their UTF-8 bytes, no whitespace, strings escaped only for `"`
    and `\\` (and U+2028/U+2029, which docker/go always escapes), integers in decimal. Floats are
    refused: Notary metadata holds none, and docker/go cannot encode fractional ones.
    """
    parts: list[str] = []
    _canonical(value, parts, 0)
    try:
        return "".join(parts).encode("utf-8")
    except UnicodeEncodeError:
        raise CanonicalJSONError("a string holds a lone surrogate") from None


def _canonical(value: Any, out: list[str], depth: int) -> None:
    if depth > 64:
        raise CanonicalJSONError("nested too deeply")
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(_canonical_string(value))
    elif isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise CanonicalJSONError("object keys must be strings")
        out.append("{")
        for i, key in enumerate(sorted(value, key=lambda k: k.encode("utf-8", "surrogatepass"))):
            if i:
                out.append(",")
            out.append(_canonical_string(key))
            out.append(":")
            _canonical(value[key], out, depth + 1)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _canonical(item, out, depth + 1)
        out.append("]")
    elif isinstance(value, float):
        raise CanonicalJSONError(f"floating point number {value!r}")
    else:
        raise CanonicalJSONError(f"unsupported type {type(value).__name__}")


def _canonical_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029") + '"'


def parse_json(raw: bytes, what: str) -> Any:
    """Strict JSON: UTF-8 only, no duplicate keys, no floats, NaN or Infinity.

    Go keeps the last of duplicate keys and Python too, but refusing them removes any doubt about
    which value was signed.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidMetadata(f"{what} is not UTF-8") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_float=_no_float, parse_constant=_no_float)
    except CanonicalJSONError as exc:
        raise InvalidMetadata(f"{what} is not valid trust data: {exc}") from None
    except (ValueError, RecursionError):
        raise InvalidMetadata(f"{what} is not valid JSON") from None


_no_duplicates = unique_keys(lambda key: CanonicalJSONError(f"duplicate key {key!r}"))


def _no_float(text: str) -> Any:
    raise CanonicalJSONError(f"number {text} is not an integer")
