"""A configuration section being validated: typed reads, field paths, bounded descriptions.

A primitive, so that every part of signgate that parses a piece of the configuration (config.py
for the shared sections, each verifier type for its own rule settings) reports errors the same
way: `config.yaml: policy[1].threshold: must be ...`, naming the file and the field.
"""

from __future__ import annotations

from typing import Any, Callable, NoReturn

from .errors import ConfigError
from .files import read_regular


class LongInteger:
    """An integer literal too long to be a sensible value (Python refuses to convert past 4300
    digits, with a ValueError). Kept as its length, so that the field's check names the field."""

    LIMIT = 100  # characters

    def __init__(self, text: str) -> None:
        self.digits = sum(ch.isdigit() for ch in text)

    def __repr__(self) -> str:
        return f"<an integer of {self.digits} digits>"


class Section:
    """A mapping being validated. Tracks which fields were read so unknown ones are reported."""

    def __init__(self, data: Any, path: str, source: str) -> None:
        if data is None:
            data = {}
        if not isinstance(data, dict):
            where = path or "top level"
            raise ConfigError(f"{source}: {where}: must be a mapping, got {type_name(data)}")
        for key in data:
            if not isinstance(key, str):
                raise ConfigError(f"{source}: {path or 'top level'}: field names must be strings, got {short(key)}")
        self.data: dict[str, Any] = data
        self.path = path
        self.source = source
        self.seen: set[str] = set()

    def path_of(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, problem: str) -> NoReturn:
        raise ConfigError(f"{self.source}: {self.path_of(name)}: {problem}")

    def keys(self) -> list[str]:
        return list(self.data)

    def done(self) -> None:
        unknown = [key for key in self.data if key not in self.seen]
        if unknown:
            where = self.path or "top level"
            raise ConfigError(f"{self.source}: {where}: unknown field {short(unknown[0])}")

    def raw(self, name: str, default: Any) -> Any:
        self.seen.add(name)
        return self.data.get(name, default)

    def section(self, name: str) -> "Section":
        return Section(self.raw(name, None), self.path_of(name), self.source)

    def _typed(self, name: str, default: Any, check: Callable[[Any], bool], what: str, required: bool) -> Any:
        # An explicit null means "not set": the README's reference writes optional fields that way.
        if name not in self.data or self.data[name] is None:
            if required:
                self.fail(name, "is required")
            self.seen.add(name)
            return default
        value = self.raw(name, default)
        if not check(value):
            shown = "" if isinstance(value, LongInteger) else f" {short(value)}"
            self.fail(name, f"must be {what}, got {type_name(value)}{shown}")
        return value

    def string(self, name: str, default: str | None, required: bool = False) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, str), "a string", required)

    def boolean(self, name: str, default: bool | None) -> Any:
        return self._typed(name, default, lambda v: isinstance(v, bool), "true or false", False)

    def integer(self, name: str, default: int, minimum: int, maximum: int) -> int:
        what = f"an integer between {minimum} and {maximum}"
        value = self._typed(name, default, lambda v: isinstance(v, int) and not isinstance(v, bool), what, False)
        if not minimum <= value <= maximum:
            self.fail(name, f"must be {what}, got {number_text(value)}")
        return int(value)

    def number(self, name: str, default: float, minimum: float, maximum: float) -> float:
        # NaN compares false with everything and infinity passes any minimum, so a bare
        # `value < minimum` lets both through: a NaN lifetime never expires, a NaN timeout
        # breaks every request. The range test below is written so that NaN fails it.
        what = f"a finite number between {minimum:g} and {maximum:g}"
        value = self._typed(
            name, default, lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), what, False
        )
        if not minimum <= value <= maximum:
            self.fail(name, f"must be {what}, got {number_text(value)}")
        return float(value)

    def choice(self, name: str, choices: tuple[str, ...], default: str | None) -> Any:
        value = self._typed(name, default, lambda v: isinstance(v, str), "a string", False)
        if value is not None and value not in choices:
            self.fail(name, f"must be one of {', '.join(choices)}, got {short(value)}")
        return value

    def string_list(self, name: str, default: tuple[str, ...]) -> list[str]:
        value = self._typed(
            name,
            default,
            lambda v: isinstance(v, (list, tuple)) and all(isinstance(i, str) and i for i in v),
            "a list of non-empty strings",
            False,
        )
        return list(value)

    def string_map(self, name: str) -> tuple[tuple[str, str], ...]:
        value = self._typed(
            name,
            {},
            lambda v: isinstance(v, dict) and all(isinstance(k, str) and isinstance(i, str) for k, i in v.items()),
            "a mapping of strings to strings (quote numbers and booleans)",
            False,
        )
        return tuple(sorted(value.items()))


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, LongInteger):
        return f"an integer of {value.digits} digits"
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer", float: "a number"}.get(
        type(value), type(value).__name__
    )


def number_text(value: Any) -> str:
    """A number as the reader wrote it in YAML: `.nan`, `.inf`, `-.inf`, or its digits (bounded)."""
    if isinstance(value, float):
        if value != value:
            return ".nan"
        if value in (float("inf"), float("-inf")):
            return ".inf" if value > 0 else "-.inf"
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        if value.bit_length() > 64:  # str() of a huge integer is slow, and refused past 4300 digits
            return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
        return str(value)
    return short(value)


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def short(value: Any, limit: int = 60) -> str:
    """A repr() of `value` cut to `limit` characters, built without ever producing more.

    repr() of a whole value can be enormous: a list nested ten deep, nine wide, is a few hundred
    bytes of YAML with aliases and 3.5 billion items in its repr(). This walk stops as soon as it
    has enough characters, so its cost is bounded by `limit`, whatever the value.
    """
    out: list[str] = []
    size = 0

    def put(text: str) -> bool:
        nonlocal size
        piece = text[: limit + 1 - size]
        out.append(piece)
        size += len(piece)
        return size > limit

    def walk(item: Any, depth: int) -> bool:  # True: enough characters
        if depth > 16:
            return put("...")
        if isinstance(item, (list, tuple)):
            if put("["):
                return True
            for position, element in enumerate(item):
                if (position and put(", ")) or walk(element, depth + 1):
                    return True
            return put("]")
        if isinstance(item, dict):
            if put("{"):
                return True
            for position, (key, element) in enumerate(item.items()):
                if (position and put(", ")) or walk(key, depth + 1) or put(": ") or walk(element, depth + 1):
                    return True
            return put("}")
        if isinstance(item, (str, bytes)):
            return put(repr(item[: limit + 1]))
        if isinstance(item, (int, float)) and not isinstance(item, bool) and not (isinstance(item, int) and item.bit_length() <= 64):
            return put(number_text(item))
        return put(clip(repr(item), limit + 1))

    walk(value, 0)
    text = "".join(out)
    return text if size <= limit else text[: limit - 3] + "..."


def ca_bundle_problem(path: str) -> str | None:
    """Why a CA bundle cannot be used, or None. Checked at load so that a wrong file fails
    `--config` instead of surfacing later as a misleading TLS error."""
    if b"-----BEGIN CERTIFICATE-----" not in head(path):
        return f"{path} holds no PEM certificate"
    import ssl

    try:
        ssl.create_default_context(cafile=path)
    except (ssl.SSLError, OSError, ValueError) as exc:
        return f"{path} is not a usable CA bundle ({exc.__class__.__name__})"
    return None


def head(path: str, size: int = 1024 * 1024) -> bytes:
    try:
        return read_regular(path, size)[:size]
    except OSError:
        return b""
