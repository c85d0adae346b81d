"""Evaluating one policy check against a candidate's metrics.

Pure functions: metrics in (a flat mapping such as ``{"quality.ndcg_at_10": 0.11, "privacy.dp": True}``),
results out. A missing metric fails its check (a warning if the check is not blocking); it never passes.
Values read back from registry tags arrive as text, so "0.11", "true" and "user" compare as 0.11, True and
"user". NumPy scalars are unwrapped to Python values.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ml.gate.policy import Check

STATUSES = ("pass", "fail", "warn", "skipped")
Scalar = float | int | bool | str | None

_OPS: dict[str, Callable[[Any, Any], bool]] = {
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


@dataclass
class CheckResult:
    """The outcome of one (possibly expanded) check. ``passed`` is None when the check was skipped."""

    name: str
    metric: str
    value: Scalar
    threshold: Scalar
    comparator: str
    passed: bool | None
    blocking: bool
    status: str
    message: str

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check {self.name!r}: status {self.status!r} is not one of {STATUSES}")

    @property
    def tag_value(self) -> str:
        """``"value / comparator threshold / status"``, e.g. ``"0.1132 / >= 0.105 / pass"``.

        A skipped check says why after its status: ``"0.1132 / >= n/a / skipped (no champion yet)"``.
        """
        threshold = "n/a" if self.threshold is None else format_value(self.threshold)
        status = self.status
        if self.status == "skipped" and ":" in self.message:
            status += f" ({self.message.split(':', 1)[0]})"
        return f"{format_value(self.value)} / {self.comparator} {threshold} / {status}"

    @property
    def gap(self) -> float | None:
        """How far a failed numeric check is from its threshold (absolute), else None."""
        if self.passed is not False or not _both_numbers(self.value, self.threshold):
            return None
        return abs(_round(float(self.value)) - _round(float(self.threshold)))  # type: ignore[arg-type]

    def shortfall(self) -> str:
        """How far off a failure is, in words ("short by 0.012"); empty for passed or skipped checks."""
        if self.passed is not False:
            return ""
        if self.value is None:
            return f"{self.metric} missing"
        gap = self.gap
        if gap is None or math.isnan(gap):
            return (
                f"expected {self.comparator} {format_value(self.threshold)}, got {format_value(self.value)}"
            )
        if gap == 0:
            side = "above" if self.comparator == ">" else "below" if self.comparator == "<" else "different"
            return f"equal to the threshold; must be strictly {side}"
        if self.comparator in (">", ">="):
            return f"short by {gap:.4g}"
        if self.comparator in ("<", "<="):
            return f"over by {gap:.4g}"
        return f"off by {gap:.4g}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CheckResult:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def _round(number: float) -> float:
    """Numbers are compared at 12 significant digits, so float noise never decides a check:
    0.1 * 1.05 is 0.10500000000000001, and a candidate at 0.105 meets that threshold."""
    return float(f"{number:.12g}")


def _both_numbers(a: Any, b: Any) -> bool:
    return all(isinstance(x, int | float) and not isinstance(x, bool) for x in (a, b))


def _unwrap(value: Any) -> Scalar:
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


def _as_number(value: Scalar) -> float | None:
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


def _compare(value: Scalar, comparator: str, threshold: Scalar) -> tuple[bool, Scalar, str]:
    """(passed, the value as compared, a problem if the value could not be compared)."""
    op = _OPS[comparator]
    if isinstance(threshold, bool):
        flag = _as_bool(value)
        if flag is None:
            return False, value, f"{format_value(value)!r} is not true/false"
        return op(flag, threshold), flag, ""
    if isinstance(threshold, int | float):
        number = _as_number(value)
        if number is None:
            return False, value, f"{format_value(value)!r} is not a number"
        if math.isnan(number):
            return False, number, "the value is NaN"
        return op(_round(number), _round(float(threshold))), number, ""
    return op(_as_text(value), str(threshold)), value, ""


def _result(
    check: Check, name: str, metric: str, value: Scalar, threshold: Scalar, ok: bool | None, message: str
) -> CheckResult:
    if ok is None:
        status = "skipped"
    elif ok:
        status = "pass"
    else:
        status = "fail" if check.blocking else "warn"
    return CheckResult(
        name=name,
        metric=metric,
        value=value,
        threshold=threshold,
        comparator=check.comparator,
        passed=ok,
        blocking=check.blocking,
        status=status,
        message=message,
    )


def _missing(metrics: Mapping[str, Any], key: str) -> bool:
    return key not in metrics or metrics[key] is None


def _evaluate_one(check: Check, name: str, metric: str, metrics: Mapping[str, Any]) -> CheckResult:
    outcome = "fail" if check.blocking else "warn (not blocking)"
    if _missing(metrics, metric):
        return _result(
            check, name, metric, None, check.threshold, False,
            f"metric {metric!r} is missing: {outcome}; a missing metric never passes",
        )  # fmt: skip
    value = _unwrap(metrics[metric])

    threshold: Scalar = check.threshold
    derived = ""
    if check.reference is not None:
        if _missing(metrics, check.reference):
            if check.skip_if_missing_reference:
                subject = check.reference.split(".", 1)[0] if "." in check.reference else check.reference
                return _result(
                    check, name, metric, value, None, None,
                    f"no {subject} yet: skipped ({check.reference!r} is missing)",
                )  # fmt: skip
            return _result(
                check, name, metric, value, None, False,
                f"reference metric {check.reference!r} is missing: {outcome}; a missing metric never passes",
            )  # fmt: skip
        reference = _as_number(_unwrap(metrics[check.reference]))
        if reference is None or math.isnan(reference):
            return _result(
                check, name, metric, value, None, False,
                f"reference metric {check.reference!r} = {metrics[check.reference]!r} is not a number: {outcome}",
            )  # fmt: skip
        threshold = reference * check.factor + check.offset
        derived = f" = {check.reference_text()} with {check.reference} = {format_value(reference)}"

    ok, compared, problem = _compare(value, check.comparator, threshold)
    rule = f"{check.comparator} {format_value(threshold)}{derived}"
    if problem:
        message = f"{metric} = {format_value(compared)}: {problem}, cannot check {rule}: {outcome}"
    else:
        message = f"{metric} = {format_value(compared)}, needs {rule}: {'pass' if ok else outcome}"
    result = _result(check, name, metric, compared, threshold, ok, message)
    if not ok and not problem:
        result.message += f", {result.shortfall()}"
    return result


def evaluate_check(check: Check, metrics: Mapping[str, Any]) -> list[CheckResult]:
    """Evaluate one check; a wildcard check gives one result per matching metric, named ``<check>.<suffix>``.

    A wildcard that matches no metric is a missing metric: one failing result named after the check.
    """
    if not check.is_wildcard:
        return [_evaluate_one(check, check.name, check.metric, metrics)]
    prefix = check.metric_prefix
    matches = sorted(
        k for k in metrics if isinstance(k, str) and k.startswith(prefix) and len(k) > len(prefix)
    )
    if not matches:
        outcome = "fail" if check.blocking else "warn (not blocking)"
        return [
            _result(
                check, check.name, check.metric, None, check.threshold, False,
                f"no metric matches {check.metric!r} (none present): {outcome}; a missing metric never passes",
            )
        ]  # fmt: skip
    return [_evaluate_one(check, f"{check.name}.{key[len(prefix) :]}", key, metrics) for key in matches]
