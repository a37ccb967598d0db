"""RFC 8785 (JSON Canonicalization Scheme) for the values receipts hold.

Receipts carry strings, integers, booleans, null, objects and arrays; money is a decimal
string, never a JSON number. So this implements the RFC for exactly that domain and refuses
floats (whose RFC 8785 form needs ECMAScript number printing) rather than guess at them.
Members are sorted by their UTF-16 code units, strings escaped minimally, no whitespace.
"""

from __future__ import annotations

from typing import Any

# Integers beyond 2^53 are not exact in every JSON reader; RFC 8785 (I-JSON) excludes them.
SAFE_INTEGER_MAX = 2**53

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


class CanonicalizationError(ValueError):
    """A value outside what receipts may hold (a float, a huge integer, a non-string key)."""


def _string(value: str) -> str:
    out = ['"']
    for ch in value:
        escaped = _SHORT_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ord(ch) < 0x20:
            out.append("\\u%04x" % ord(ch))
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > SAFE_INTEGER_MAX:
            raise CanonicalizationError(f"integer {value} is outside the safe range")
        return str(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_text(v) for v in value) + "]"
    if isinstance(value, dict):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalizationError(f"object key {key!r} is not a string")
        names = sorted(value, key=lambda k: k.encode("utf-16-be"))
        return "{" + ",".join(_string(k) + ":" + _text(value[k]) for k in names) + "}"
    raise CanonicalizationError(f"{type(value).__name__} values are not used in receipts: {value!r}")


def canonicalize(value: Any) -> bytes:
    """The RFC 8785 bytes of `value` (UTF-8)."""
    return _text(value).encode("utf-8")
