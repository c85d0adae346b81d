"""Evaluating one policy check against a candidate's metrics.

Pure functions: metrics in (a flat mapping such as ``{"quality.ndcg_at_10": 0.11, "privacy.dp": True}``),
results out. A missing metric fails its check (a warning if the check is not blocking); it never passes.
Values read back from registry tags arrive as text, so "0.11", "true" and "user" compare as 0.11, True and
"user". NumPy scalars are unwrapped to Python values.

Uncertainty: ``draws`` maps a metric name to its values on the bootstrap resamples over shoppers
(``ml.evaluation.bootstrap``), the same resamples for every metric, so resample b of the candidate and resample
b of a baseline are the same shoppers. A check's margin is ``metric - threshold`` per resample (the threshold
from the reference's own resampled values, so candidate vs baseline is a paired difference); its interval is
always shown when draws exist, and ``decide_on: lower|upper`` compares that bound of the margin with 0 instead
of the point estimate. A check that must decide on a bound and has no draws fails: it never falls back to the
point estimate silently.

Fallback ``no_worse_than_alternatives`` (fairness): a candidate below its threshold still passes when no
alternative is fairer with confidence, that is when for every alternative ``alternative.<name>.<metric>`` the
upper bound of the paired difference candidate - alternative is at or above 0. Alternatives the pipeline offers
are the best shippable baseline and the champion; the same metric is computed for them on the same resamples.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ml.gate.policy import Check

STATUSES = ("pass", "fail", "warn", "skipped")
# metrics[UNMEASURABLE_PREFIX + metric]: why the evaluation could not measure `metric` on this hold-out. Only a
# check with `skip_if_no_match` skips on it, saying why; a missing metric without a reason always fails.
UNMEASURABLE_PREFIX = "unmeasurable."
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
ALTERNATIVE_PREFIX = "alternative."  # alternative.<name>.<metric>: an alternative's value of <metric>
THRESHOLD_RULE = "threshold"
FALLBACK_RULE = "no_worse_than_alternatives"
Draws = Mapping[str, Any]  # metric name -> its values on the bootstrap resamples (sequence or array)


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
    decide_on: str = "point"
    confidence: float | None = None
    interval: list[float] | None = None  # the metric's own interval, when resamples were given
    margin: float | None = None  # metric - threshold on the hold-out
    margin_interval: list[float] | None = None  # the paired interval of metric - threshold
    rule: str = THRESHOLD_RULE  # which rule decided: the threshold, or the no-worse-than-alternatives fallback

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"check {self.name!r}: status {self.status!r} is not one of {STATUSES}")

    @property
    def tag_value(self) -> str:
        """``"value / comparator threshold / status"``, e.g. ``"0.1132 / >= 0.105 / pass"``.

        With resamples the margin and its interval come before the status, and a pass by the fallback says so:
        ``"0.1132 / >= 0.105 / margin 0.0082 [0.0011, 0.015] at 95%, on the lower 95% bound / pass"``.

        A skipped check says why after its status: ``"0.1132 / >= n/a / skipped (no champion yet)"``.
        """
        threshold = "n/a" if self.threshold is None else format_value(self.threshold)
        status = self.status
        if self.status == "skipped" and ":" in self.message:
            status += f" ({self.message.split(':', 1)[0]})"
        parts = [format_value(self.value), f"{self.comparator} {threshold}"]
        if self.margin_interval is not None:
            parts.append(f"margin {format_value(self.margin)} {self.interval_text()}, on {self.decided_on_text()}")
        if self.rule != THRESHOLD_RULE:
            parts.append(f"by {self.rule}")
        return " / ".join([*parts, status])

    def interval_text(self, which: str = "margin") -> str:
        """``[lower, upper] at 95%`` of the margin (or of the metric itself with which="value"); "" without one."""
        bounds = self.margin_interval if which == "margin" else self.interval
        if bounds is None or self.confidence is None:
            return ""
        return f"[{format_value(bounds[0])}, {format_value(bounds[1])}] at {self.confidence:.0%}"

    def decided_on_text(self) -> str:
        """"the point estimate" or "the lower 95% bound"."""
        if self.decide_on == "point" or self.confidence is None:
            return "the point estimate"
        return f"the {self.decide_on} {self.confidence:.0%} bound"

    @property
    def decided_margin(self) -> float | None:
        """The margin (metric - threshold) that decided: the point estimate's or the chosen bound's."""
        if self.decide_on == "point" or self.margin_interval is None:
            return self.margin
        return self.margin_interval[0 if self.decide_on == "lower" else 1]

    @property
    def gap(self) -> float | None:
        """How far a failed numeric check is from its threshold (absolute), else None.

        A check decided on an interval bound is that far from 0 by that bound of its margin."""
        if self.passed is not False:
            return None
        if self.decide_on != "point" and self.decided_margin is not None:
            return abs(_round(self.decided_margin))
        if not _both_numbers(self.value, self.threshold):
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
        if self.decide_on != "point":  # decided on a bound of the margin: say which and how far from 0
            side = "below" if self.comparator in (">", ">=") else "above"
            return f"the {self.decided_on_text()[4:]} of the margin is {gap:.4g} {side} 0"
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
        """Read a recorded result; fields added later (intervals, rule) take their defaults when absent."""
        required = ("name", "metric", "value", "threshold", "comparator", "passed", "blocking", "status", "message")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in required or k in data})


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
        decide_on=check.decide_on,
        confidence=check.confidence,
    )


def _missing(metrics: Mapping[str, Any], key: str) -> bool:
    return key not in metrics or metrics[key] is None


def _draws_of(draws: Draws | None, key: str) -> np.ndarray | None:
    if draws is None or key not in draws or draws[key] is None:
        return None
    values = np.asarray(draws[key], dtype=np.float64).ravel()
    return values if values.size else None


def _interval(values: np.ndarray, confidence: float) -> list[float] | None:
    """The two-sided percentile interval of resampled values (NaN resamples left out); None if none is finite."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    tail = (1.0 - confidence) / 2.0
    return [float(x) for x in np.quantile(finite, [tail, 1.0 - tail])]


def _margin_draws(check: Check, metric: str, draws: Draws | None, threshold: float) -> np.ndarray | None:
    """metric - threshold on each resample: the threshold from the reference's resampled values (paired), or fixed."""
    values = _draws_of(draws, metric)
    if values is None:
        return None
    if check.reference is None:
        return values - threshold
    reference = _draws_of(draws, check.reference)
    if reference is None or reference.shape != values.shape:
        return None
    return values - (reference * check.factor + check.offset)


def _alternatives(metrics: Mapping[str, Any], metric: str) -> list[str]:
    """Names of the alternatives that carry ``metric`` (keys ``alternative.<name>.<metric>``), sorted."""
    suffix = "." + metric
    names = (k[len(ALTERNATIVE_PREFIX) : -len(suffix)] for k in metrics
             if isinstance(k, str) and k.startswith(ALTERNATIVE_PREFIX) and k.endswith(suffix))
    return sorted(n for n in names if n and "." not in n and not _missing(metrics, f"{ALTERNATIVE_PREFIX}{n}{suffix}"))


def _no_worse_than_alternatives(
    check: Check, metric: str, metrics: Mapping[str, Any], draws: Draws | None
) -> tuple[bool, str]:
    """(passed, why): passes unless some alternative is fairer with confidence on the paired resamples.

    For each alternative the paired difference candidate - alternative is taken resample by resample; the
    alternative is fairer with confidence when the upper bound of its interval is below 0. No alternative, or
    one without resamples, means the fallback cannot vouch for the candidate: it does not pass."""
    names = _alternatives(metrics, metric)
    if not names:
        return False, f"fallback {FALLBACK_RULE}: no alternative carries {metric}, so it cannot apply"
    own = _draws_of(draws, metric)
    parts, worse = [], []
    for name in names:
        key = f"{ALTERNATIVE_PREFIX}{name}.{metric}"
        theirs = _draws_of(draws, key)
        if own is None or theirs is None or theirs.shape != own.shape:
            return False, f"fallback {FALLBACK_RULE}: no bootstrap resamples of {metric} and {key}, so it cannot apply"
        bounds = _interval(own - theirs, check.confidence)
        if bounds is None:
            return False, f"fallback {FALLBACK_RULE}: the difference with {name} is undefined on every resample"
        text = (f"{name} {format_value(_as_number(_unwrap(metrics[key])))}, candidate - {name} "
                f"[{format_value(bounds[0])}, {format_value(bounds[1])}]")
        parts.append(text)
        if _round(bounds[1]) < 0:
            worse.append(name)
    where = "; ".join(parts)
    if worse:
        return False, (f"fallback {FALLBACK_RULE} does not apply: {', '.join(worse)} fairer with "
                       f"{check.confidence:.0%} confidence ({where})")
    return True, (f"passed by fallback {FALLBACK_RULE}: no alternative is fairer with {check.confidence:.0%} "
                  f"confidence ({where})")


def _evaluate_one(
    check: Check, name: str, metric: str, metrics: Mapping[str, Any], draws: Draws | None = None
) -> CheckResult:
    outcome = "fail" if check.blocking else "warn (not blocking)"
    if _missing(metrics, metric):
        why = metrics.get(UNMEASURABLE_PREFIX + metric)
        if why and check.skip_if_no_match:
            return _result(check, name, metric, None, check.threshold, None,
                           f"not measurable on this hold-out: {why}: skipped")
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
    numeric = not problem and _both_numbers(compared, threshold)
    margin = _margin_draws(check, metric, draws, float(threshold)) if numeric else None  # type: ignore[arg-type]
    own = _draws_of(draws, metric) if numeric else None
    interval = None if own is None else _interval(own, check.confidence)
    margin_interval = None if margin is None else _interval(margin, check.confidence)
    if check.decide_on != "point" and not problem:
        if margin_interval is None:
            problem = (f"deciding on the {check.decide_on} bound needs bootstrap resamples of {metric}"
                       + (f" and {check.reference}" if check.reference else "") + ", none given")
            ok = False
        else:
            bound = margin_interval[0 if check.decide_on == "lower" else 1]
            ok = _OPS[check.comparator](_round(bound), 0.0)
    if problem:
        message = f"{metric} = {format_value(compared)}: {problem}, cannot check {rule}: {outcome}"
    else:
        message = f"{metric} = {format_value(compared)}, needs {rule}"
        if margin_interval is not None:
            message += (f"; margin {format_value(float(compared) - float(threshold))} "  # type: ignore[arg-type]
                        f"[{format_value(margin_interval[0])}, {format_value(margin_interval[1])}] at "
                        f"{check.confidence:.0%}, decided on the "
                        + ("point estimate" if check.decide_on == "point" else f"{check.decide_on} bound"))
        message += f": {'pass' if ok else outcome}"
    result = _result(check, name, metric, compared, threshold, ok, message)
    result.interval, result.margin_interval = interval, margin_interval
    if numeric:
        result.margin = float(compared) - float(threshold)  # type: ignore[arg-type]
    if not ok and not problem:
        result.message += f", {result.shortfall()}"
        if check.fallback == FALLBACK_RULE:
            rescued, why = _no_worse_than_alternatives(check, metric, metrics, draws)
            result.message += f"; {why}"
            if rescued:
                result.passed, result.status, result.rule = True, "pass", FALLBACK_RULE
    return result


def evaluate_check(check: Check, metrics: Mapping[str, Any], draws: Draws | None = None) -> list[CheckResult]:
    """Evaluate one check; a wildcard check gives one result per matching metric, named ``<check>.<suffix>``.

    ``draws`` holds the metrics' bootstrap resamples (module docstring). A wildcard that matches no metric (after
    ``exclude``) is a missing metric: one failing result named after the check, or a skipped one when the check
    says ``skip_if_no_match``.
    """
    if not check.is_wildcard:
        return [_evaluate_one(check, check.name, check.metric, metrics, draws)]
    prefix = check.metric_prefix
    matches = sorted(
        k for k in metrics if isinstance(k, str) and k.startswith(prefix) and len(k) > len(prefix)
        and k[len(prefix) :] not in check.exclude
    )
    if not matches:
        excluded = f" other than {', '.join(check.exclude)}" if check.exclude else ""
        if check.skip_if_no_match:
            return [
                _result(
                    check, check.name, check.metric, None, check.threshold, None,
                    f"nothing to check: skipped (no metric matches {check.metric!r}{excluded})",
                )
            ]  # fmt: skip
        outcome = "fail" if check.blocking else "warn (not blocking)"
        return [
            _result(
                check, check.name, check.metric, None, check.threshold, False,
                f"no metric matches {check.metric!r}{excluded} (none present): {outcome}; "
                "a missing metric never passes",
            )
        ]  # fmt: skip
    return [_evaluate_one(check, f"{check.name}.{key[len(prefix) :]}", key, metrics, draws) for key in matches]
