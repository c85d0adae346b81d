"""The gate policy: a YAML file of checks, validated on load and identified by its hash.

A policy file looks like::

    name: vetted-default
    description: what this policy is for
    checks:
      - name: quality_vs_baseline
        metric: quality.ndcg_at_10
        comparator: ">="                      # quote it: YAML reads a bare >= as a block scalar
        reference: quality.best_baseline_ndcg_at_10
        factor: 1.05                          # effective threshold = reference * factor + offset
        blocking: true
      - name: privacy_epsilon
        metric: privacy.epsilon
        comparator: "<="
        threshold: 8                          # a fixed threshold instead of a reference

A check's metric may end with ``.*`` (``fairness.user_ndcg_ratio.*``): it expands to one check per
matching metric when evaluated, less the suffixes listed in ``exclude`` (those get a check of their own);
``skip_if_no_match: true`` skips (and says so) instead of failing when nothing is left to match, and when the
evaluation recorded why a metric could not be measured on the hold-out (``unmeasurable.<metric>``, e.g. no
light/heavy split); a missing metric without such a reason always fails.

Quality and fairness figures come with paired bootstrap resamples over shoppers (``ml.evaluation.bootstrap``).
``decide_on`` says what a check compares: ``point`` (the hold-out figure), ``lower`` or ``upper`` (that end of
the ``confidence`` interval of the margin, metric - threshold, taken resample by resample). ``lower`` on ``>=``
passes only when the candidate clears the threshold with confidence; ``upper`` fails only when it misses it
with confidence. ``fallback: no_worse_than_alternatives`` lets a failing fairness check pass when no
alternative (best shippable baseline, champion) is fairer with confidence (``ml.gate.uncertainty``). The policy is identified on the registry as ``name@sha256[:12]`` of the
file's bytes, so any edit to the file changes the label.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

COMPARATORS = ("<", "<=", ">", ">=", "==", "!=")
ORDERING_COMPARATORS = ("<", "<=", ">", ">=")
DEFAULT_POLICY_FILE = "default_policy.yaml"

# gate.status and gate.policy are tags of their own: a check may not take those names.
RESERVED_CHECK_NAMES = frozenset({"status", "policy"})
_CHECK_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
_POLICY_KEYS = ("name", "description", "checks")
_CHECK_KEYS = (
    "name",
    "metric",
    "comparator",
    "threshold",
    "reference",
    "factor",
    "offset",
    "blocking",
    "description",
    "skip_if_missing_reference",
    "decide_on",
    "confidence",
    "fallback",
    "exclude",
    "skip_if_no_match",
)
DECIDE_ON = ("point", "lower", "upper")
FALLBACKS = ("none", "no_worse_than_alternatives")
DEFAULT_CONFIDENCE = 0.95

Threshold = float | bool | str | None


class PolicyError(ValueError):
    """A policy file (or a check built in code) is invalid; the message names the file, check and field."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Check:
    """One rule of the gate: ``metrics[metric] <comparator> effective threshold``.

    The effective threshold is ``threshold`` when given, else ``metrics[reference] * factor + offset``.
    A metric ending in ``.*`` is a wildcard expanded to one check per matching metric.
    """

    name: str
    metric: str
    comparator: str
    threshold: Threshold = None
    reference: str | None = None
    factor: float = 1.0
    offset: float = 0.0
    blocking: bool = True
    description: str = ""
    skip_if_missing_reference: bool = False
    decide_on: str = "point"
    confidence: float = DEFAULT_CONFIDENCE
    fallback: str = "none"
    exclude: tuple[str, ...] = ()
    skip_if_no_match: bool = False

    def __post_init__(self) -> None:
        problems = _check_problems(SimpleNamespace(**{f.name: getattr(self, f.name) for f in fields(self)}))
        if problems:
            raise PolicyError(f"check {self.name!r}: " + "; ".join(problems))
        # Normalise numbers once so every consumer sees floats (YAML gives ints for "8" and "0").
        if _is_number(self.threshold):
            object.__setattr__(self, "threshold", float(self.threshold))  # type: ignore[arg-type]
        elif isinstance(self.threshold, str) and self.comparator in ORDERING_COMPARATORS:
            object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "factor", float(self.factor))
        object.__setattr__(self, "offset", float(self.offset))
        object.__setattr__(self, "confidence", float(self.confidence))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    @property
    def is_wildcard(self) -> bool:
        return self.metric.endswith(".*")

    @property
    def metric_prefix(self) -> str:
        """For a wildcard ``a.b.*`` the prefix ``a.b.`` every expanded metric starts with."""
        return self.metric[:-1] if self.is_wildcard else self.metric

    def reference_text(self) -> str:
        """The derived threshold as a person reads it: ``champion.ndcg_at_10 - 0.01``; "" without a reference."""
        if self.reference is None:
            return ""
        text = self.reference
        if self.factor != 1.0:
            text += f" x {self.factor:g}"
        if self.offset > 0:
            text += f" + {self.offset:g}"
        elif self.offset < 0:
            text += f" - {-self.offset:g}"
        return text


_CHECK_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(Check) if f.name not in ("name", "metric", "comparator")
}


def _check_problems(check: Any) -> list[str]:
    """Every problem with one check's fields, each starting with the field's name."""
    problems: list[str] = []
    if not isinstance(check.name, str) or not _CHECK_NAME.match(check.name):
        problems.append(
            f"field 'name': {check.name!r} must be letters, digits, '_' or '-' "
            "(it becomes the tag gate.<name>; '.' is kept for wildcard expansions)"
        )
    elif check.name in RESERVED_CHECK_NAMES:
        problems.append(f"field 'name': {check.name!r} is reserved (gate.{check.name} is its own tag)")

    if not isinstance(check.metric, str) or not check.metric.strip():
        problems.append("field 'metric': must be a non-empty metric name such as quality.ndcg_at_10")
    elif "*" in check.metric and not (check.metric.endswith(".*") and check.metric.count("*") == 1):
        problems.append(
            f"field 'metric': {check.metric!r}: '*' is allowed only as a final '.*' (fairness.user_ndcg_ratio.*)"
        )

    if check.comparator not in COMPARATORS:
        problems.append(
            f"field 'comparator': {check.comparator!r} is not one of {', '.join(COMPARATORS)} "
            '(quote it in YAML: comparator: ">=")'
        )

    has_threshold = check.threshold is not None
    has_reference = check.reference is not None
    if has_threshold == has_reference:
        problems.append(
            "fields 'threshold'/'reference': give exactly one: a fixed threshold, or a reference metric "
            f"(got {'both' if has_threshold else 'neither'})"
        )
    if has_threshold:
        problems.extend(_threshold_problems(check.threshold, check.comparator))
    if has_reference:
        if not isinstance(check.reference, str) or not check.reference.strip():
            problems.append("field 'reference': must be a non-empty metric name such as champion.ndcg_at_10")
        elif "*" in check.reference:
            problems.append(f"field 'reference': {check.reference!r} may not be a wildcard")
    for name in ("factor", "offset"):
        value = getattr(check, name)
        if not _is_number(value) or not math.isfinite(value):
            problems.append(f"field {name!r}: must be a finite number, got {value!r}")
    if has_threshold and (check.factor != 1.0 or check.offset != 0.0):
        problems.append("fields 'factor'/'offset': apply to a reference only; drop them or use 'reference'")

    if not isinstance(check.blocking, bool):
        problems.append(f"field 'blocking': must be true or false, got {check.blocking!r}")
    if not isinstance(check.skip_if_missing_reference, bool):
        problems.append(
            f"field 'skip_if_missing_reference': must be true or false, got {check.skip_if_missing_reference!r}"
        )
    elif check.skip_if_missing_reference and not has_reference:
        problems.append("field 'skip_if_missing_reference': only makes sense with a 'reference'")
    if not isinstance(check.description, str):
        problems.append(f"field 'description': must be text, got {check.description!r}")
    problems.extend(_uncertainty_problems(check, has_threshold))
    problems.extend(_wildcard_problems(check))
    return problems


def _uncertainty_problems(check: Any, has_threshold: bool) -> list[str]:
    """decide_on, confidence and fallback: an interval bound or a fallback needs a numeric ordering check."""
    problems: list[str] = []
    if check.decide_on not in DECIDE_ON:
        problems.append(f"field 'decide_on': {check.decide_on!r} is not one of {', '.join(DECIDE_ON)}")
    confidence = check.confidence
    if not _is_number(confidence) or not 0 < confidence < 1:
        problems.append(f"field 'confidence': must be a number between 0 and 1 (exclusive), got {confidence!r}")
    if check.fallback not in FALLBACKS:
        problems.append(f"field 'fallback': {check.fallback!r} is not one of {', '.join(FALLBACKS)}")
    numeric = check.comparator in ORDERING_COMPARATORS and (not has_threshold or not isinstance(check.threshold, bool))
    if check.decide_on in ("lower", "upper") and not numeric:
        problems.append(
            f"field 'decide_on': {check.decide_on!r} needs a numeric comparison (<, <=, >, >=); "
            "use 'point' for equality and true/false checks"
        )
    if check.fallback == "no_worse_than_alternatives" and check.comparator not in (">", ">="):
        problems.append("field 'fallback': no_worse_than_alternatives needs '>=' or '>' (higher is fairer)")
    return problems


def _wildcard_problems(check: Any) -> list[str]:
    problems: list[str] = []
    wildcard = isinstance(check.metric, str) and check.metric.endswith(".*")
    exclude = check.exclude
    if not isinstance(exclude, list | tuple) or not all(isinstance(x, str) and x for x in exclude):
        problems.append(f"field 'exclude': must be a list of metric suffixes (e.g. [activity]), got {exclude!r}")
    elif exclude and not wildcard:
        problems.append("field 'exclude': only makes sense with a wildcard metric ending in '.*'")
    if not isinstance(check.skip_if_no_match, bool):
        problems.append(f"field 'skip_if_no_match': must be true or false, got {check.skip_if_no_match!r}")
    return problems


def _threshold_problems(threshold: Any, comparator: str) -> list[str]:
    if comparator in ORDERING_COMPARATORS:
        if _is_number(threshold):
            if not math.isfinite(threshold):
                return [f"field 'threshold': must be finite, got {threshold!r}"]
            return []
        if isinstance(threshold, str):  # YAML 1.1 reads 1e-5 (no dot) as text
            try:
                if math.isfinite(float(threshold)):
                    return []
            except ValueError:
                pass
        return [f"field 'threshold': comparator {comparator!r} needs a number, got {threshold!r}"]
    if _is_number(threshold) and not math.isfinite(threshold):
        return [f"field 'threshold': must be finite, got {threshold!r}"]
    if not isinstance(threshold, bool | int | float | str):
        return [f"field 'threshold': must be a number, true/false or text, got {threshold!r}"]
    return []


@dataclass(frozen=True)
class Policy:
    """A validated policy. ``label`` (name@hash) is what ``gate.policy`` records."""

    name: str
    checks: tuple[Check, ...]
    sha256: str
    description: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        return f"{self.name}@{self.sha256[:12]}"


def parse_policy(data: bytes, source: str = "<policy>") -> Policy:
    """Parse and validate policy YAML bytes; every error names ``source``, the check and the field."""
    sha = hashlib.sha256(data).hexdigest()
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise PolicyError(f'{source}: not valid YAML ({exc}). Quote comparators: comparator: ">=" and "!="') from exc
    if not isinstance(doc, Mapping):
        raise PolicyError(f"{source}: expected a mapping with 'name' and 'checks', got {type(doc).__name__}")

    errors: list[str] = []
    errors.extend(f"{source}: {p}" for p in _unknown_key_problems(doc, _POLICY_KEYS, "top level"))
    name = doc.get("name")
    if not isinstance(name, str) or not name.strip():
        errors.append(f"{source}: field 'name': the policy needs a non-empty name, got {name!r}")
    description = doc.get("description", "")
    if not isinstance(description, str):
        errors.append(f"{source}: field 'description': must be text")
    raw_checks = doc.get("checks")
    if not isinstance(raw_checks, list) or not raw_checks:
        errors.append(f"{source}: field 'checks': must be a non-empty list of checks, got {raw_checks!r}")
        raw_checks = []

    checks: list[Check] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(raw_checks, start=1):
        where = f"{source}: check #{index}"
        if not isinstance(raw, Mapping):
            errors.append(f"{where}: must be a mapping of fields, got {raw!r}")
            continue
        if isinstance(raw.get("name"), str):
            where += f" {raw['name']!r}"
        problems = _unknown_key_problems(raw, _CHECK_KEYS, "check")
        missing = [k for k in ("name", "metric", "comparator") if k not in raw]
        problems.extend(f"field {k!r}: is required" for k in missing)
        if problems:
            errors.extend(f"{where}: {p}" for p in problems)
            continue
        values = {k: raw[k] for k in _CHECK_KEYS if k in raw}
        if isinstance(values.get("exclude"), list):
            values["exclude"] = tuple(values["exclude"])
        problems = _check_problems(SimpleNamespace(**{**_CHECK_DEFAULTS, **values}))
        if problems:
            errors.extend(f"{where}: {p}" for p in problems)
            continue
        check = Check(**values)
        if check.name in seen:
            errors.append(f"{where}: field 'name': duplicate of check #{seen[check.name]}; names must be unique")
            continue
        seen[check.name] = index
        checks.append(check)

    if errors:
        raise PolicyError(f"invalid gate policy ({len(errors)} problem(s)):\n  " + "\n  ".join(errors))
    return Policy(name=str(name), checks=tuple(checks), sha256=sha, description=str(description))


def _unknown_key_problems(doc: Mapping[Any, Any], allowed: tuple[str, ...], what: str) -> list[str]:
    problems = []
    for key in doc:
        if key in allowed:
            continue
        hint = difflib.get_close_matches(str(key), allowed, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; allowed: {', '.join(allowed)}"
        problems.append(f"field {key!r}: unknown {what} key{suggestion}")
    return problems


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and validate a policy file; ``None`` (or "") loads the packaged ``default_policy.yaml``."""
    if path is None or str(path) == "":
        resource = resources.files("ml.gate").joinpath(DEFAULT_POLICY_FILE)
        return parse_policy(resource.read_bytes(), source=f"ml/gate/{DEFAULT_POLICY_FILE}")
    file = Path(path)
    if not file.is_file():
        raise PolicyError(
            f"policy file {str(file)!r} not found; pass an existing YAML file, or none for the default policy"
        )
    return parse_policy(file.read_bytes(), source=str(file))


def preflight(policy: str | None, paths: Mapping[str, str | None]) -> Policy:
    """Check, before a run starts, the gate policy it names and every file or folder another parameter names.

    The gate reads its policy only after training and evaluation; a wrong path or a broken file found there
    costs the whole run. ``paths`` maps a parameter name to the path it holds (empty: not used). Returns the
    policy; raises PolicyError listing every problem, each naming its parameter."""
    # a URL (an fsspec source's s3://..., memory://...) is the source's to reach: only local paths are checked here
    problems = [
        f"parameter {name!r}: {value!r} does not exist"
        for name, value in paths.items()
        if value and "://" not in value and not Path(value).expanduser().exists()
    ]
    try:
        loaded = load_policy(policy or None)
    except PolicyError as exc:
        raise PolicyError("\n".join([f"parameter 'policy': {exc}", *problems])) from None
    if problems:
        raise PolicyError("\n".join(problems))
    return loaded
