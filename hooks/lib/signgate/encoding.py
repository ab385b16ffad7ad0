"""Strict decoders shared by every format signgate reads: base64 and duplicate-free JSON objects.

One definition each, so that every verifier refuses the same malformed input the same way.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Callable

_URLSAFE_TO_STANDARD = str.maketrans("-_", "+/")


def b64_strict(value: Any, allow_empty: bool = False) -> bytes | None:
    """The bytes of a base64 string in the standard alphabet, padded, with nothing else; or None.

    None also for a value that is not a string, and for the empty string unless allowed.
    """
    if not isinstance(value, str) or (not value and not allow_empty):
        return None
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def b64_protobuf(value: Any) -> bytes | None:
    """As b64_strict, but also the URL-safe alphabet, unpadded, which protobuf JSON may use.

    urlsafe_b64decode would silently drop any other character, so translate and decode strictly.
    """
    decoded = b64_strict(value)
    if decoded is None and isinstance(value, str) and value:
        decoded = b64_strict(value.translate(_URLSAFE_TO_STANDARD) + "=" * (-len(value) % 4))
    return decoded


def unique_keys(refuse: Callable[[str], Exception]) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    """A json.loads object_pairs_hook that raises refuse(key) on a key seen twice in one object.

    Python keeps the last of duplicate keys, other parsers the first: a document that two parsers
    read differently must not be trusted.
    """

    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise refuse(key)
            result[key] = value
        return result

    return build


def protobuf_uint(value: Any) -> int | None:
    """A protobuf int64 as JSON carries it (a decimal string or a number), non-negative; None
    for anything else (booleans, negatives, floats, more than 20 digits)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and value.isdigit() and len(value) <= 20:
        return int(value)
    return None
