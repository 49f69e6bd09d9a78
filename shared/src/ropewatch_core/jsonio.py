"""Strict JSON and UTC timestamps, one implementation for records, reports and the history store.

Strict JSON has no NaN or Infinity: PostgreSQL's json type rejects them and browsers' ``JSON.parse``
fails on them, so every non-finite float becomes ``null``. numpy and pandas values become plain
numbers and ISO strings. Timestamps are UTC ISO-8601 with microseconds and a ``Z``.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any, TypeGuard

import orjson

UTC_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_iso(when: datetime | None = None) -> str:
    """``when`` (default now; naive means UTC) as ``2026-11-23T10:00:00.000000Z``."""
    when = datetime.now(timezone.utc) if when is None else when
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime(UTC_FORMAT)


def finite_number(value: object) -> TypeGuard[int | float]:
    """A JSON number (not a bool) that is finite as a float: NaN, infinities and a 400-digit integer
    (``float()`` overflows) are not; the one check for every number read from a request or a file."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def plain(value: Any) -> Any:
    """``value`` as plain JSON types: dict keys as str, sequences and arrays as lists, numpy scalars
    unwrapped, non-finite floats and pandas' NA/NaT as None, timestamps as ISO strings."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) or _is_array(value):
        return [plain(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int) and not hasattr(value, "dtype"):
        return value
    if hasattr(value, "dtype") and hasattr(value, "item"):  # numpy scalar
        return plain(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def dumps(value: Any) -> str:
    """Strict JSON text of ``value`` (orjson: fast on large reports; numpy arrays serialized natively)."""
    return orjson.dumps(
        value, default=_default, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
    ).decode()


def _is_array(value: Any) -> bool:
    return type(value).__name__ == "ndarray"


def _default(value: Any) -> Any:
    out = plain(value)
    if out is value:
        raise TypeError(f"not JSON serializable: {type(value).__name__}")
    return out
