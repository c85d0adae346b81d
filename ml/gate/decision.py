"""The gate's decision: every check of a policy evaluated against a candidate's metrics.

``decide`` is pure: metrics and their bootstrap resamples in (``ml.gate.checks``), a decision out. The decision is recorded (model version tags, ``summary.json``, XCom) and promotion
reads the recorded decision; it never recomputes it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ml.gate.checks import evaluate_check
from ml.gate.policy import Policy
from ml.gate.result import THRESHOLD_RULE, CheckResult
from ml.gate.uncertainty import Draws
from ml.gate.values import format_value

log = logging.getLogger(__name__)

DECISION_STATUSES = ("passed", "failed")


@dataclass
class GateDecision:
    """``passed`` unless a blocking check failed. Lists hold check names (expanded for wildcards)."""

    status: str
    policy_label: str
    checks: list[CheckResult]
    blocking_failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.status not in DECISION_STATUSES:
            raise ValueError(f"gate status {self.status!r} is not one of {DECISION_STATUSES}")

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_tags(self) -> dict[str, str]:
        """Model version tags: ``gate.status``, ``gate.policy`` and ``gate.<check>`` for every check."""
        tags = {"gate.status": self.status, "gate.policy": self.policy_label}
        tags.update({f"gate.{result.name}": result.tag_value for result in self.checks})
        return tags

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-ready data for ``summary.json`` and XCom; ``from_dict`` reads it back."""
        return {
            "status": self.status,
            "policy_label": self.policy_label,
            "checks": [result.to_dict() for result in self.checks],
            "blocking_failures": list(self.blocking_failures),
            "warnings": list(self.warnings),
            "skipped": list(self.skipped),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateDecision:
        try:
            return cls(
                status=data["status"],
                policy_label=data["policy_label"],
                checks=[CheckResult.from_dict(item) for item in data["checks"]],
                blocking_failures=list(data.get("blocking_failures", [])),
                warnings=list(data.get("warnings", [])),
                skipped=list(data.get("skipped", [])),
            )
        except KeyError as exc:
            raise ValueError(f"not a recorded gate decision: field {exc.args[0]!r} is missing") from exc

    def summary_markdown(self) -> str:
        """A reviewer's table: check | value [interval] | threshold | margin [interval] | decided on | result.

        The margin is value - threshold (paired on the resamples); "decided on" names the point estimate or the
        interval bound the check compared with 0, and a pass by the fallback rule says so."""
        lines = [
            f"**Gate {self.status}** (policy `{self.policy_label}`): "
            f"{sum(r.status == 'pass' for r in self.checks)} of {len(self.checks)} checks passed, "
            f"{len(self.blocking_failures)} blocking failure(s), {len(self.warnings)} warning(s), "
            f"{len(self.skipped)} skipped.",
            "",
            "| check | value | threshold | margin | decided on | result |",
            "|---|---|---|---|---|---|",
        ]
        for r in self.checks:
            threshold = "n/a" if r.threshold is None else format_value(r.threshold)
            lines.append(
                "| "
                + " | ".join(
                    _cell(text)
                    for text in (
                        r.name,
                        _with_interval(r.value, r.interval),
                        f"{r.comparator} {threshold}",
                        _with_interval(r.margin, r.margin_interval) if r.margin_interval is not None else "",
                        r.decided_on_text() if r.margin_interval is not None or r.decide_on != "point" else "",
                        _result_text(r),
                    )
                )
                + " |"
            )
        confidence = next((r.confidence for r in self.checks if r.interval is not None), None)
        if confidence is not None:
            lines += [
                "",
                f"Intervals: {confidence:.0%} paired bootstrap over shoppers; margin = value - threshold "
                "on each resample.",
            ]
        notes = [r for r in self.checks if r.status != "pass" or r.rule != THRESHOLD_RULE]
        if notes:
            lines.append("")
            lines.extend(f"- `{r.name}` ({r.status}): {r.message}" for r in notes)
        return "\n".join(lines) + "\n"


def _with_interval(value: Any, bounds: list[float] | None) -> str:
    text = format_value(value)
    return text if bounds is None else f"{text} [{format_value(bounds[0])}, {format_value(bounds[1])}]"


def _result_text(result: CheckResult) -> str:
    if result.status == "pass":
        return "pass" if result.rule == THRESHOLD_RULE else f"pass by {result.rule}"
    if result.status == "skipped":
        return f"skipped: {result.message.split(':', 1)[0]}"
    label = "**FAIL**" if result.status == "fail" else "warn"
    return f"{label}: {result.shortfall()}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def decide(policy: Policy, metrics: Mapping[str, Any], draws: Draws | None = None) -> GateDecision:
    """Evaluate every check of ``policy`` on ``metrics`` (and their bootstrap ``draws``, paired resample by
    resample); failed if any blocking check failed."""
    results = [result for check in policy.checks for result in evaluate_check(check, metrics, draws)]
    blocking_failures = [r.name for r in results if r.status == "fail"]
    decision = GateDecision(
        status="failed" if blocking_failures else "passed",
        policy_label=policy.label,
        checks=results,
        blocking_failures=blocking_failures,
        warnings=[r.name for r in results if r.status == "warn"],
        skipped=[r.name for r in results if r.status == "skipped"],
    )
    log.info(
        "gate %s under %s: blocking failures %s, warnings %s, skipped %s",
        decision.status,
        policy.label,
        blocking_failures or "none",
        decision.warnings or "none",
        decision.skipped or "none",
    )
    return decision
