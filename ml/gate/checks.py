"""Evaluating one policy check against a candidate's metrics: ``evaluate_check``.

Pure functions: metrics in (a flat mapping such as ``{"quality.ndcg_at_10": 0.11, "privacy.dp": True}``),
results out (``ml.gate.result``). A missing metric fails its check (a warning if the check is not blocking); it
never passes. Values are read and compared as ``ml.gate.values`` says (text from tags, NumPy scalars).

Uncertainty: with bootstrap resamples (``draws``, ``ml.gate.uncertainty``) a check's margin interval is always
shown, and ``decide_on: lower|upper`` compares that bound of the margin with 0 instead of the point estimate. A
check that must decide on a bound and has no draws fails: it never falls back to the point estimate silently.
A failing check with ``fallback: no_worse_than_alternatives`` passes when no alternative is fairer with
confidence (``ml.gate.uncertainty``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ml.gate.policy import Check
from ml.gate.result import CheckResult
from ml.gate.uncertainty import (
    FALLBACK_RULE,
    Draws,
    draws_of,
    interval_of,
    margin_draws,
    no_worse_than_alternatives,
)
from ml.gate.values import (
    OPS,
    Scalar,
    as_number,
    both_numbers,
    compare,
    format_value,
    is_missing,
    rounded,
    unwrap,
)

# metrics[UNMEASURABLE_PREFIX + metric]: why the evaluation could not measure `metric` on this hold-out. Only a
# check with `skip_if_no_match` skips on it, saying why; a missing metric without a reason always fails.
UNMEASURABLE_PREFIX = "unmeasurable."


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


def _evaluate_one(
    check: Check, name: str, metric: str, metrics: Mapping[str, Any], draws: Draws | None = None
) -> CheckResult:
    outcome = "fail" if check.blocking else "warn (not blocking)"
    if is_missing(metrics, metric):
        why = metrics.get(UNMEASURABLE_PREFIX + metric)
        if why and check.skip_if_no_match:
            return _result(
                check, name, metric, None, check.threshold, None, f"not measurable on this hold-out: {why}: skipped"
            )
        return _result(
            check, name, metric, None, check.threshold, False,
            f"metric {metric!r} is missing: {outcome}; a missing metric never passes",
        )  # fmt: skip
    value = unwrap(metrics[metric])

    threshold: Scalar = check.threshold
    derived = ""
    if check.reference is not None:
        if is_missing(metrics, check.reference):
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
        reference = as_number(unwrap(metrics[check.reference]))
        if reference is None or math.isnan(reference):
            return _result(
                check, name, metric, value, None, False,
                f"reference metric {check.reference!r} = {metrics[check.reference]!r} is not a number: {outcome}",
            )  # fmt: skip
        threshold = reference * check.factor + check.offset
        derived = f" = {check.reference_text()} with {check.reference} = {format_value(reference)}"

    ok, compared, problem = compare(value, check.comparator, threshold)
    rule = f"{check.comparator} {format_value(threshold)}{derived}"
    numeric = not problem and both_numbers(compared, threshold)
    margin = margin_draws(check, metric, draws, float(threshold)) if numeric else None  # type: ignore[arg-type]
    own = draws_of(draws, metric) if numeric else None
    interval = None if own is None else interval_of(own, check.confidence)
    margin_interval = None if margin is None else interval_of(margin, check.confidence)
    if check.decide_on != "point" and not problem:
        if margin_interval is None:
            problem = (
                f"deciding on the {check.decide_on} bound needs bootstrap resamples of {metric}"
                + (f" and {check.reference}" if check.reference else "")
                + ", none given"
            )
            ok = False
        else:
            bound = margin_interval[0 if check.decide_on == "lower" else 1]
            ok = OPS[check.comparator](rounded(bound), 0.0)
    if problem:
        message = f"{metric} = {format_value(compared)}: {problem}, cannot check {rule}: {outcome}"
    else:
        message = f"{metric} = {format_value(compared)}, needs {rule}"
        if margin_interval is not None:
            message += (
                f"; margin {format_value(float(compared) - float(threshold))} "  # type: ignore[arg-type]
                f"[{format_value(margin_interval[0])}, {format_value(margin_interval[1])}] at "
                f"{check.confidence:.0%}, decided on the "
                + ("point estimate" if check.decide_on == "point" else f"{check.decide_on} bound")
            )
        message += f": {'pass' if ok else outcome}"
    result = _result(check, name, metric, compared, threshold, ok, message)
    result.interval, result.margin_interval = interval, margin_interval
    if numeric:
        result.margin = float(compared) - float(threshold)  # type: ignore[arg-type]
    if not ok and not problem:
        result.message += f", {result.shortfall()}"
        if check.fallback == FALLBACK_RULE:
            rescued, why = no_worse_than_alternatives(check, metric, metrics, draws)
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
        k
        for k in metrics
        if isinstance(k, str)
        and k.startswith(prefix)
        and len(k) > len(prefix)
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
