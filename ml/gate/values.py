"""Reading and comparing metric values for the gate's checks.

Values read back from registry tags arrive as text, so "0.11", "true" and "user" compare as 0.11, True and
"user". NumPy scalars are unwrapped to Python values. Numbers are compared at 12 significant digits
(``rounded``), so float noise never decides a check.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

Scalar = float | int | bool | str | None

OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_MAX_TEXT = 200  # keeps a stray long string from bloating a tag


def format_value(value: Any) -> str:
    """Compact text for tags and tables: floats to 4 significant digits, booleans as true/false."""
    if value is None:
        return "missing"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def rounded(number: float) -> float:
    """Numbers are compared at 12 significant digits, so float noise never decides a check:
    0.1 * 1.05 is 0.10500000000000001, and a candidate at 0.105 meets that threshold."""
    return float(f"{number:.12g}")


def both_numbers(a: Any, b: Any) -> bool:
    return all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b))


def unwrap(value: Any) -> Scalar:
    """Plain Python scalar: NumPy scalars via ``.item()``; other objects as their text."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    item = getattr(value, "item", None)
    if callable(item):
        try:
            plain = item()
        except (TypeError, ValueError):
            plain = None
        if isinstance(plain, bool | int | float | str):
            return plain
    return str(value)


def as_number(value: Scalar) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _as_bool(value: Scalar) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    return None


def _as_text(value: Scalar) -> str:
    return format_value(value) if isinstance(value, bool) else str(value)


def compare(value: Scalar, comparator: str, threshold: Scalar) -> tuple[bool, Scalar, str]:
    """(passed, the value as compared, a problem if the value could not be compared)."""
    op = OPS[comparator]
    if isinstance(threshold, bool):
        flag = _as_bool(value)
        if flag is None:
            return False, value, f"{format_value(value)!r} is not true/false"
        return op(flag, threshold), flag, ""
    if isinstance(threshold, int | float):
        number = as_number(value)
        if number is None:
            return False, value, f"{format_value(value)!r} is not a number"
        if math.isnan(number):
            return False, number, "the value is NaN"
        return op(rounded(number), rounded(float(threshold))), number, ""
    return op(_as_text(value), str(threshold)), value, ""


def is_missing(metrics: Mapping[str, Any], key: str) -> bool:
    return key not in metrics or metrics[key] is None
