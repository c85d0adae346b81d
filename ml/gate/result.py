"""The outcome of one gate check (``CheckResult``) and how it reads in tags, tables and messages."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from ml.gate.values import Scalar, both_numbers, format_value, rounded

STATUSES = ("pass", "fail", "warn", "skipped")
THRESHOLD_RULE = "threshold"


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
        """ "the point estimate" or "the lower 95% bound"."""
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
            return abs(rounded(self.decided_margin))
        if not both_numbers(self.value, self.threshold):
            return None
        return abs(rounded(float(self.value)) - rounded(float(self.threshold)))  # type: ignore[arg-type]

    def shortfall(self) -> str:
        """How far off a failure is, in words ("short by 0.012"); empty for passed or skipped checks."""
        if self.passed is not False:
            return ""
        if self.value is None:
            return f"{self.metric} missing"
        gap = self.gap
        if gap is None or math.isnan(gap):
            return f"expected {self.comparator} {format_value(self.threshold)}, got {format_value(self.value)}"
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
