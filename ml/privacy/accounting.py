"""The user-level privacy budget of one model: DP-SGD composed with the released item-transition counts.

The reported epsilon covers everything the model learned from shoppers (house plan, "What the epsilon
covers"). Two mechanisms touch shoppers' data:
1. DP-SGD on the model, each Poisson-sampled shopper's gradient (of its mean loss over up to
   `examples_per_user` of its examples) clipped as one: the sampled Gaussian mechanism, `steps` times at
   `sample_rate` with `noise_multiplier`;
2. the item-transition counts (ml.privacy.pair_counts), released by Gaussian partition selection: each
   shopper adds at most `per_user` distinct (previous, next) pairs, 1 each, so one shopper moves the counts by
   at most sqrt(per_user) in L2; only the pairs that occur are counted, each gets N(0, s^2) with
   s = sigma_t * sqrt(per_user), and a pair is released only when its noised count exceeds the threshold tau
   (`selection_threshold`; Google's differential-privacy library, GaussianPartitionSelection, and Wilson et
   al. 2020, "Differentially private SQL with bounded user contribution").
The Gaussian parts are accounted in Renyi DP with Opacus' RDPAccountant (history entries (noise, sample_rate,
steps) and (sigma_t, 1.0, 1)) and converted to (epsilon, delta) together, which is tighter than adding two
epsilons.

The run's delta is split: `selection_delta(delta)` (SELECTION_DELTA_SHARE of it) bounds the chance that the
threshold lets through a pair only one shopper holds, the rest is the delta the RDP accountant converts at.
Why that sum is the run's delta: take neighbours D (with shopper u) and D' (without), E the pairs only u holds.
Let M'(D) be the run on D with E's pairs dropped from the release (and from what training reads): it draws
noise on the pairs D' has, whose counts differ from D' by at most sqrt(per_user) in L2, so M'(D) against M(D')
is the composition the accountant bounds, (eps, delta_rdp) both ways. E's noise is independent of the rest, so
M(D) equals M'(D) except when a pair of E clears tau, with probability p <= delta_selection, and
P[M(D) in S] <= e^eps P[M(D') in S] + delta_rdp + delta_selection. The other way, an output of M(D') holds no
pair of E, so P[M(D) in S] = (1 - p) P[M'(D) in S] and P[M(D') in S] <= e^eps / (1 - p) P[M(D) in S] +
delta_rdp. The reported epsilon is therefore eps_rdp(delta - delta_selection) + log(1 / (1 - delta_selection))
(the second term is about delta_selection: negligible, kept for rigour), at the full delta (`composed_epsilon`).

`plan_budget` spends about `transitions_share` of the target on the counts (the smallest sigma_t whose
stand-alone epsilon is at most share * target) and gives DP-SGD the smallest noise multiplier that keeps the
composition within the target. Training must then use exactly that noise multiplier, sample rate and number
of steps (Opacus `make_private(noise_multiplier=...)`, not `make_private_with_epsilon`, which would spend the
whole budget on DP-SGD alone), and release the counts with the plan's sigma and threshold.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Any

log = logging.getLogger(__name__)

ACCOUNTANT = "rdp"  # opacus.accountants.RDPAccountant, default orders
# the share of the run's delta given to the threshold of the transition counts (the rest goes to the accountant's
# conversion). At a fixed epsilon for the counts, a smaller share raises the threshold (tau grows like
# s * sqrt(2 log(per_user / delta_selection))) and a larger one needs more noise s for the conversion at the delta
# left; the threshold in counts is lowest near the even split (benchmarks/results/sparse-release.md, "The split of
# delta")
SELECTION_DELTA_SHARE = 0.5
_REL_TOL = 1e-4  # bisection stops when the noise bracket is this narrow (relative) ...
_EPS_SLACK = 2e-3  # ... or when the epsilon is within this fraction below the target


def default_delta(n_users: int) -> float:
    """delta = n_users ** -1.1: strictly below 1 / n_users, as the house plan requires."""
    if n_users < 2:
        raise ValueError(f"default_delta needs at least 2 shoppers, got n_users={n_users}")
    return float(n_users) ** -1.1


@dataclass(frozen=True)
class PrivacyPlan:
    """The noise of each mechanism and the epsilon it costs, alone and composed (all at `delta`), and the
    transition counts' release threshold (`transitions_threshold`, in counts) with its share of delta."""

    target_epsilon: float
    delta: float
    sample_rate: float
    steps: int
    noise_multiplier: float
    transitions_sigma: float | None
    transitions_per_user: int
    epsilon_sgd: float
    epsilon_transitions: float
    epsilon_total: float
    accountant: str
    transitions_threshold: float | None = None
    selection_delta: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def mechanisms(self) -> list[dict[str, Any]]:
        """One entry per mechanism, for the model card."""
        parts: list[dict[str, Any]] = [
            {
                "mechanism": "DP-SGD (sampled Gaussian), per-shopper clipping",
                "noise_multiplier": self.noise_multiplier,
                "sample_rate": self.sample_rate,
                "steps": self.steps,
                "epsilon_alone": self.epsilon_sgd,
            }
        ]
        if self.transitions_sigma is not None:
            parts.append(
                {
                    "mechanism": "Gaussian partition selection on item-transition counts",
                    "noise_multiplier": self.transitions_sigma,
                    "l2_sensitivity": math.sqrt(self.transitions_per_user),
                    "per_user": self.transitions_per_user,
                    "threshold": self.transitions_threshold,
                    "selection_delta": self.selection_delta,
                    "epsilon_alone": self.epsilon_transitions,
                }
            )
        return parts


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")


def _epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    from opacus.accountants import RDPAccountant

    _check_delta(delta)
    if not history:
        return 0.0
    accountant = RDPAccountant()
    accountant.history = list(history)
    return float(accountant.get_epsilon(delta=delta))


def selection_delta(delta: float) -> float:
    """The part of the run's `delta` that the transition counts' threshold spends (SELECTION_DELTA_SHARE)."""
    _check_delta(delta)
    return SELECTION_DELTA_SHARE * delta


def _per_pair_delta(delta_selection: float, per_user: int) -> float:
    """The chance p that one pair held by one shopper is released such that 1 - (1 - p) ** per_user is
    `delta_selection` (independent noise on a shopper's at most `per_user` pairs; the union bound per_user * p
    is a hair above it)."""
    return -math.expm1(math.log1p(-delta_selection) / per_user)


def selection_threshold(sigma: float, per_user: int, delta_selection: float) -> float:
    """tau, in counts: a pair is released when its noised count exceeds it. With noise std s = sigma *
    sqrt(per_user), a pair only one shopper holds (count 1) is released with probability
    p = 1 - Phi((tau - 1) / s), and one shopper holds at most `per_user` such pairs, so the chance that any of
    them is released is 1 - (1 - p) ** per_user = `delta_selection`: tau = 1 + s * Phi^-1(1 - p). This is
    GaussianPartitionSelection::CalculateThreshold (with CalculateAdjustedDelta) of Google's
    differential-privacy library, cc/algorithms/partition-selection.h, and its
    common_docs/Delta_For_Thresholding.pdf; `threshold_delta` is the inverse."""
    if sigma <= 0 or per_user < 1:
        raise ValueError(f"need sigma > 0 and per_user >= 1, got {sigma} and {per_user}")
    _check_delta(delta_selection)
    p = _per_pair_delta(delta_selection, per_user)
    return 1.0 - sigma * math.sqrt(per_user) * NormalDist().inv_cdf(p)  # Phi^-1(1 - p) = -Phi^-1(p), exact in p


def threshold_delta(threshold: float, sigma: float, per_user: int) -> float:
    """The delta_selection that `threshold` spends (inverse of `selection_threshold`)."""
    if sigma <= 0 or per_user < 1:
        raise ValueError(f"need sigma > 0 and per_user >= 1, got {sigma} and {per_user}")
    p = 0.5 * math.erfc((threshold - 1.0) / (sigma * math.sqrt(per_user) * math.sqrt(2.0)))  # 1 - Phi, exact tail
    return -math.expm1(per_user * math.log1p(-p))


def composed_epsilon(
    noise_multiplier: float | None,
    sample_rate: float,
    steps: int,
    transitions_sigma: float | None,
    delta: float,
) -> float:
    """Epsilon at `delta` of DP-SGD (skipped when noise_multiplier is None) composed with the transition counts'
    Gaussian partition selection (skipped when transitions_sigma is None): with the counts, the accountant
    converts at delta - selection_delta(delta), and the selection adds log(1 / (1 - selection_delta)) (the
    module docstring has the argument)."""
    history: list[tuple[float, float, int]] = []
    if noise_multiplier is not None:
        if noise_multiplier <= 0:
            raise ValueError(f"noise_multiplier must be positive, got {noise_multiplier}")
        if not 0 < sample_rate <= 1 or steps < 1:
            raise ValueError(f"need 0 < sample_rate <= 1 and steps >= 1, got {sample_rate} and {steps}")
        history.append((float(noise_multiplier), float(sample_rate), int(steps)))
    if transitions_sigma is not None:
        if transitions_sigma <= 0:
            raise ValueError(f"transitions_sigma must be positive, got {transitions_sigma}")
        history.append((float(transitions_sigma), 1.0, 1))
        spent = selection_delta(delta)
        return _epsilon(history, delta - spent) - math.log1p(-spent)
    return _epsilon(history, delta)


def _smallest_noise(epsilon_of: Callable[[float], float], target: float) -> float:
    """The smallest noise whose epsilon is <= target (epsilon decreases with noise), by bisection."""
    lo, hi = 0.0, 1.0
    while epsilon_of(hi) > target:
        lo, hi = hi, hi * 2
        if hi > 1e6:
            raise ValueError(f"no noise level reaches epsilon {target:g}: the budget is too small")
    eps_hi = epsilon_of(hi)
    while hi - lo > _REL_TOL * hi and eps_hi < target * (1 - _EPS_SLACK):
        mid = (lo + hi) / 2
        eps_mid = epsilon_of(mid)
        if eps_mid > target:
            lo = mid
        else:
            hi, eps_hi = mid, eps_mid
    return hi


def plan_budget(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    transitions_share: float,
    transitions_per_user: int,
) -> PrivacyPlan:
    """Split `target_epsilon` between the transition counts (about `transitions_share` of it) and DP-SGD."""
    if target_epsilon <= 0:
        raise ValueError(f"target_epsilon must be positive, got {target_epsilon}")
    _check_delta(delta)
    if not 0 <= transitions_share < 1:
        raise ValueError(f"transitions_share must be in [0, 1), got {transitions_share}")
    if not 0 < sample_rate <= 1 or steps < 1:
        raise ValueError(f"need 0 < sample_rate <= 1 and steps >= 1, got {sample_rate} and {steps}")
    if transitions_share > 0 and transitions_per_user < 1:
        raise ValueError(f"transitions_per_user must be at least 1, got {transitions_per_user}")

    sigma_t: float | None = None
    tau: float | None = None
    eps_t = 0.0
    if transitions_share > 0:
        sigma_t = _smallest_noise(
            lambda s: composed_epsilon(None, sample_rate, steps, s, delta), transitions_share * target_epsilon
        )
        eps_t = composed_epsilon(None, sample_rate, steps, sigma_t, delta)
        tau = selection_threshold(sigma_t, transitions_per_user, selection_delta(delta))
    noise = _smallest_noise(
        lambda z: composed_epsilon(z, sample_rate, steps, sigma_t, delta),
        target_epsilon,
    )
    plan = PrivacyPlan(
        target_epsilon=float(target_epsilon),
        delta=float(delta),
        sample_rate=float(sample_rate),
        steps=int(steps),
        noise_multiplier=noise,
        transitions_sigma=sigma_t,
        transitions_per_user=int(transitions_per_user),
        epsilon_sgd=composed_epsilon(noise, sample_rate, steps, None, delta),
        epsilon_transitions=eps_t,
        epsilon_total=composed_epsilon(noise, sample_rate, steps, sigma_t, delta),
        accountant=ACCOUNTANT,
        transitions_threshold=tau,
        selection_delta=selection_delta(delta) if sigma_t is not None else 0.0,
    )
    log.info(
        "privacy plan: epsilon %.3f at delta %.2e = DP-SGD (noise %.3f, q %.4f, %d steps; %.3f alone)"
        " + transitions (sigma %s, threshold %s; %.3f alone)",
        plan.epsilon_total,
        delta,
        noise,
        sample_rate,
        steps,
        plan.epsilon_sgd,
        "none" if sigma_t is None else f"{sigma_t:.3f}",
        "none" if tau is None else f"{tau:.2f}",
        eps_t,
    )
    return plan


def privacy_record(
    plan: PrivacyPlan | None,
    sgd: Mapping[str, Any] | None,
    *,
    n_users: int,
    secure: bool,
    target_epsilon: float,
    pairs_per_user: int,
    with_transitions: bool,
) -> dict[str, Any]:
    """What the run's privacy was, as trained: the unit, and with DP (`plan` and the trained DP-SGD's `sgd`, the
    trainer's DPInfo) the composed epsilon over DP-SGD at the steps actually taken and, when `with_transitions`,
    the released transition counts, each mechanism with its own epsilon and noise."""
    from ml.privacy.noise import SECURE_SOURCE

    record: dict[str, Any] = {
        "dp": plan is not None,
        "unit": "user" if plan is not None else "none",
        "n_users": n_users,
        "secure_rng": secure,
    }
    if plan is None or sgd is None:
        return record
    total = composed_epsilon(
        sgd["noise_multiplier"], sgd["sample_rate"], sgd["steps"], plan.transitions_sigma, plan.delta
    )
    mechanisms: list[dict[str, Any]] = [
        {
            "name": "DP-SGD (Opacus, ghost clipping, Poisson sampling of shoppers)",
            "epsilon_alone": sgd["epsilon_sgd"],
            "noise_multiplier": sgd["noise_multiplier"],
            "max_grad_norm": sgd["max_grad_norm"],
            "sample_rate": sgd["sample_rate"],
            "steps": sgd["steps"],
            "examples_per_user": sgd["examples_per_user"],
        }
    ]
    if with_transitions:
        mechanisms.append(
            {
                "name": "item-transition counts (Gaussian partition selection, per-shopper pairs capped)",
                "epsilon_alone": plan.epsilon_transitions,
                "sigma": plan.transitions_sigma,
                "threshold": plan.transitions_threshold,
                "selection_delta": plan.selection_delta,
                "pairs_per_shopper": pairs_per_user,
                "noise_source": SECURE_SOURCE if secure else "seeded numpy generator",
            }
        )
    record.update(
        {
            "epsilon": total,
            "delta": plan.delta,
            "target_epsilon": target_epsilon,
            "mechanisms": mechanisms,
            "accountant": "rdp",
            **{k: v for k, v in sgd.items() if k != "epsilon_sgd"},
        }
    )
    return record


def privacy_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """The record's figures as MLflow metrics (none without DP)."""
    if "epsilon" not in record:
        return {}
    return {
        "privacy.epsilon": record["epsilon"],
        "privacy.delta": record["delta"],
        "privacy.noise_multiplier": record["noise_multiplier"],
        "privacy.sample_rate": record["sample_rate"],
        "privacy.steps": record["steps"],
        "privacy.max_grad_norm": record["max_grad_norm"],
    }
