"""Bootstrap resamples in a gate check: intervals, paired margins, and the fairness fallback.

``draws`` maps a metric name to its values on the bootstrap resamples over shoppers
(``ml.evaluation.bootstrap``), the same resamples for every metric, so resample b of the candidate and resample
b of a baseline are the same shoppers. A check's margin is ``metric - threshold`` per resample (the threshold
from the reference's own resampled values, so candidate vs baseline is a paired difference).

Fallback ``no_worse_than_alternatives`` (fairness): a candidate below its threshold still passes when no
alternative is fairer with confidence, that is when for every alternative ``alternative.<name>.<metric>`` the
upper bound of the paired difference candidate - alternative is at or above 0. Alternatives the pipeline offers
are the best shippable baseline and the champion; the same metric is computed for them on the same resamples.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ml.gate.policy import Check
from ml.gate.values import as_number, format_value, is_missing, rounded, unwrap

ALTERNATIVE_PREFIX = "alternative."  # alternative.<name>.<metric>: an alternative's value of <metric>
FALLBACK_RULE = "no_worse_than_alternatives"
Draws = Mapping[str, Any]  # metric name -> its values on the bootstrap resamples (sequence or array)


def draws_of(draws: Draws | None, key: str) -> np.ndarray | None:
    if draws is None or key not in draws or draws[key] is None:
        return None
    values = np.asarray(draws[key], dtype=np.float64).ravel()
    return values if values.size else None


def interval_of(values: np.ndarray, confidence: float) -> list[float] | None:
    """The two-sided percentile interval of resampled values (NaN resamples left out); None if none is finite."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    tail = (1.0 - confidence) / 2.0
    return [float(x) for x in np.quantile(finite, [tail, 1.0 - tail])]


def margin_draws(check: Check, metric: str, draws: Draws | None, threshold: float) -> np.ndarray | None:
    """metric - threshold on each resample: the threshold from the reference's resampled values (paired), or fixed."""
    values = draws_of(draws, metric)
    if values is None:
        return None
    if check.reference is None:
        return values - threshold
    reference = draws_of(draws, check.reference)
    if reference is None or reference.shape != values.shape:
        return None
    return values - (reference * check.factor + check.offset)


def _alternatives(metrics: Mapping[str, Any], metric: str) -> list[str]:
    """Names of the alternatives that carry ``metric`` (keys ``alternative.<name>.<metric>``), sorted."""
    suffix = "." + metric
    names = (
        k[len(ALTERNATIVE_PREFIX) : -len(suffix)]
        for k in metrics
        if isinstance(k, str) and k.startswith(ALTERNATIVE_PREFIX) and k.endswith(suffix)
    )
    return sorted(
        n for n in names if n and "." not in n and not is_missing(metrics, f"{ALTERNATIVE_PREFIX}{n}{suffix}")
    )


def no_worse_than_alternatives(
    check: Check, metric: str, metrics: Mapping[str, Any], draws: Draws | None
) -> tuple[bool, str]:
    """(passed, why): passes unless some alternative is fairer with confidence on the paired resamples.

    For each alternative the paired difference candidate - alternative is taken resample by resample; the
    alternative is fairer with confidence when the upper bound of its interval is below 0. No alternative, or
    one without resamples, means the fallback cannot vouch for the candidate: it does not pass."""
    names = _alternatives(metrics, metric)
    if not names:
        return False, f"fallback {FALLBACK_RULE}: no alternative carries {metric}, so it cannot apply"
    own = draws_of(draws, metric)
    parts, worse = [], []
    for name in names:
        key = f"{ALTERNATIVE_PREFIX}{name}.{metric}"
        theirs = draws_of(draws, key)
        if own is None or theirs is None or theirs.shape != own.shape:
            return False, f"fallback {FALLBACK_RULE}: no bootstrap resamples of {metric} and {key}, so it cannot apply"
        bounds = interval_of(own - theirs, check.confidence)
        if bounds is None:
            return False, f"fallback {FALLBACK_RULE}: the difference with {name} is undefined on every resample"
        text = (
            f"{name} {format_value(as_number(unwrap(metrics[key])))}, candidate - {name} "
            f"[{format_value(bounds[0])}, {format_value(bounds[1])}]"
        )
        parts.append(text)
        if rounded(bounds[1]) < 0:
            worse.append(name)
    where = "; ".join(parts)
    if worse:
        return False, (
            f"fallback {FALLBACK_RULE} does not apply: {', '.join(worse)} fairer with "
            f"{check.confidence:.0%} confidence ({where})"
        )
    return True, (
        f"passed by fallback {FALLBACK_RULE}: no alternative is fairer with {check.confidence:.0%} confidence ({where})"
    )
