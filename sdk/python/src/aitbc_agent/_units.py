"""The SDK's edge between Python numbers and the wire's exact decimals.

Callers pass rates, amounts and GPU-seconds as int, float, str or Decimal, and fractions
(multipliers, thresholds) as floats; the wire carries decimal strings and basis points. A float
is read by its shortest repr (0.1 is "0.1", not 0.1000000000000000055...), and a value that
needs more digits than its wire format has is refused rather than rounded: a price is never
changed silently.
"""

from __future__ import annotations

import decimal
import math
from decimal import Decimal
from typing import Any

from .errors import ValidationError

NANO_PLACES = 9  # Amount: AITBC to the nano
MILLI_PLACES = 3  # GpuMillis: GPU-seconds to the millisecond
BPS_PER_UNIT = 10_000


def to_decimal(value: Any, field: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise ValidationError(f"{field} must be a number, not {value!r}", field=field)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{field} must be finite, not {value!r}", field=field)
        value = repr(value)
    if isinstance(value, (int, str, Decimal)):
        try:
            d = Decimal(str(value).strip())
        except decimal.InvalidOperation as e:
            raise ValidationError(f"{field} {value!r} is not a number", field=field) from e
        if not d.is_finite():
            raise ValidationError(f"{field} must be finite, not {value!r}", field=field)
        return d
    raise ValidationError(f"{field} must be a number, not {type(value).__name__}", field=field)


def _wire(value: Any, field: str, places: int, what: str) -> str:
    d = to_decimal(value, field)
    if d < 0:
        raise ValidationError(f"{field} must not be negative", field=field)
    if d != d.quantize(Decimal(1).scaleb(-places), rounding=decimal.ROUND_DOWN):
        raise ValidationError(f"{field} {value!r} has more than {places} decimal places ({what})", field=field)
    text = format(d.normalize(), "f")
    return text


def amount(value: Any, field: str) -> str:
    """AITBC as the wire's Amount: a decimal string, at most 9 decimal places."""
    return _wire(value, field, NANO_PLACES, "AITBC are counted to the nano")


def gpu_seconds(value: Any, field: str) -> str:
    """GPU-seconds as the wire's GpuMillis: a decimal string, at most 3 decimal places."""
    return _wire(value, field, MILLI_PLACES, "GPU time is metered to the millisecond")


def bps(value: Any, field: str) -> int:
    """A fraction or multiplier (0.8, 1.5) as basis points (8000, 15000), exactly."""
    d = to_decimal(value, field) * BPS_PER_UNIT
    if d < 0 or d != d.to_integral_value():
        raise ValidationError(f"{field} {value!r} is not a whole number of basis points (0.0001)", field=field)
    return int(d)


def from_bps(value: int) -> float:
    return value / BPS_PER_UNIT


def decimal_or_none(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))
