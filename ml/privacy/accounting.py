"""The user-level privacy budget of one model: DP-SGD composed with noised item-transition counts.

The reported epsilon covers everything the model learned from shoppers (house plan, "What the epsilon
covers"). Two mechanisms touch shoppers' data:
1. DP-SGD on the model, each Poisson-sampled shopper's gradient (of its mean loss over up to
   `examples_per_user` of its examples) clipped as one: the sampled Gaussian mechanism, `steps` times at
   `sample_rate` with `noise_multiplier`;
2. the item-transition counts blended into the score: each shopper adds at most `per_user` distinct
   (previous, next) pairs, 1 each, so one shopper moves the count matrix by at most sqrt(per_user) in L2; the
   Gaussian mechanism adds N(0, (sigma_t * sqrt(per_user))^2) to every cell, once (sample rate 1).
Both are accounted in Renyi DP with Opacus' RDPAccountant (history entries (noise, sample_rate, steps) and
(sigma_t, 1.0, 1)) and converted to (epsilon, delta) together, which is tighter than adding two epsilons.

`plan_budget` spends about `transitions_share` of the target on the counts (the smallest sigma_t whose
stand-alone epsilon is at most share * target) and gives DP-SGD the smallest noise multiplier that keeps the
composition within the target. Training must then use exactly that noise multiplier, sample rate and number
of steps (Opacus `make_private(noise_multiplier=...)`, not `make_private_with_epsilon`, which would spend the
whole budget on DP-SGD alone).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ml.privacy.noise import NoiseSource

log = logging.getLogger(__name__)

ACCOUNTANT = "rdp"  # opacus.accountants.RDPAccountant, default orders
MAX_DENSE_ITEMS = 20_000
_REL_TOL = 1e-4  # bisection stops when the noise bracket is this narrow (relative) ...
_EPS_SLACK = 2e-3  # ... or when the epsilon is within this fraction below the target


def default_delta(n_users: int) -> float:
    """delta = n_users ** -1.1: strictly below 1 / n_users, as the house plan requires."""
    if n_users < 2:
        raise ValueError(f"default_delta needs at least 2 shoppers, got n_users={n_users}")
    return float(n_users) ** -1.1


@dataclass(frozen=True)
class PrivacyPlan:
    """The noise of each mechanism and the epsilon it costs, alone and composed (all at `delta`)."""

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
                    "mechanism": "Gaussian noise on item-transition counts",
                    "noise_multiplier": self.transitions_sigma,
                    "l2_sensitivity": math.sqrt(self.transitions_per_user),
                    "per_user": self.transitions_per_user,
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


def composed_epsilon(
    noise_multiplier: float | None,
    sample_rate: float,
    steps: int,
    transitions_sigma: float | None,
    delta: float,
) -> float:
    """Epsilon at `delta` of DP-SGD (skipped when noise_multiplier is None) composed with the transition counts'
    Gaussian mechanism (skipped when transitions_sigma is None)."""
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
    eps_t = 0.0
    if transitions_share > 0:
        sigma_t = _smallest_noise(
            lambda s: composed_epsilon(None, sample_rate, steps, s, delta), transitions_share * target_epsilon
        )
        eps_t = composed_epsilon(None, sample_rate, steps, sigma_t, delta)
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
    )
    log.info(
        "privacy plan: epsilon %.3f at delta %.2e = DP-SGD (noise %.3f, q %.4f, %d steps; %.3f alone)"
        " + transitions (sigma %s; %.3f alone)",
        plan.epsilon_total,
        delta,
        noise,
        sample_rate,
        steps,
        plan.epsilon_sgd,
        "none" if sigma_t is None else f"{sigma_t:.3f}",
        eps_t,
    )
    return plan


def _user_pairs(seq: Sequence[int], n_items: int, which: int) -> list[tuple[int, int]]:
    """Distinct consecutive (prev, next) pairs of one shopper, in order of first appearance."""
    items = [int(i) for i in seq]
    for i in items:
        if not 0 <= i < n_items:
            raise ValueError(f"sequence {which} holds item index {i}, outside 0..{n_items - 1}")
    return list(dict.fromkeys(zip(items[:-1], items[1:], strict=True)))


def capped_pairs(
    sequences: Sequence[Sequence[int]], n_items: int, per_user: int, rng: np.random.Generator
) -> list[list[tuple[int, int]]]:
    """What each shopper adds to the transition counts: its distinct consecutive (prev, next) pairs, a random
    `per_user` of them (drawn with `rng`) when it has more. Each sequence is one shopper's items in time order."""
    if n_items < 1 or per_user < 1:
        raise ValueError(f"need n_items >= 1 and per_user >= 1, got {n_items} and {per_user}")
    out = []
    capped = 0
    for which, seq in enumerate(sequences):
        pairs = _user_pairs(seq, n_items, which)
        if len(pairs) > per_user:
            capped += 1
            keep = np.sort(rng.choice(len(pairs), size=per_user, replace=False))
            pairs = [pairs[k] for k in keep]
        out.append(pairs)
    if capped:
        log.info("transition counts: %d shopper(s) capped at %d distinct pairs", capped, per_user)
    return out


def noisy_counts(
    pairs: Sequence[Sequence[tuple[int, int]]],
    n_items: int,
    per_user: int,
    sigma: float | None,
    noise: NoiseSource,
) -> np.ndarray:
    """The n_items x n_items (float32) counts of the shoppers' pairs (`capped_pairs`: at most `per_user` each)
    and, when `sigma` is given, Gaussian noise of std sigma * sqrt(per_user) on every cell, clipped at 0.

    `noise` is where the Gaussians come from: `ml.privacy.noise.SecureRandom` in production, a seeded numpy
    generator where the counts must be reproducible (`ml.privacy.noise.noise_source`)."""
    if n_items > MAX_DENSE_ITEMS:
        raise ValueError(
            f"the transition counts add noise to every cell of a dense {n_items} x {n_items} matrix, too big "
            f"above {MAX_DENSE_ITEMS} items; set transitions_share=0 to train without the transition signal"
        )
    if sigma is not None and sigma <= 0:
        raise ValueError(f"sigma must be positive (or None for no noise), got {sigma}")
    too_many = next((i for i, p in enumerate(pairs) if len(p) > per_user), None)
    if too_many is not None:
        raise ValueError(f"shopper {too_many} adds {len(pairs[too_many])} pairs, more than per_user={per_user}")
    rows = np.asarray([a for p in pairs for a, _ in p], dtype=np.int64)
    cols = np.asarray([b for p in pairs for _, b in p], dtype=np.int64)
    counts = np.zeros((n_items, n_items), dtype=np.float32)
    np.add.at(counts, (rows, cols), 1.0)
    if sigma is not None:
        scale = np.float32(sigma * math.sqrt(per_user))
        block = max(1, (1 << 22) // n_items)  # noise drawn in blocks of rows: bounded extra memory
        for r0 in range(0, n_items, block):
            r1 = min(n_items, r0 + block)
            counts[r0:r1] += noise.standard_normal((r1 - r0, n_items), dtype=np.float32) * scale
        np.maximum(counts, 0.0, out=counts)
    return counts


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
                "name": "item-transition counts (Gaussian mechanism, per-shopper pairs capped)",
                "epsilon_alone": plan.epsilon_transitions,
                "sigma": plan.transitions_sigma,
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
