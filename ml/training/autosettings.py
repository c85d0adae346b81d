"""Training settings that fit the corpus: the batch of shoppers, the examples per shopper and the transition floor.

A setting left at its "auto" value in RunConfig (batch_size 0, examples_per_user 0, dp.transitions_floor None) is
chosen here from measurable corpus statistics (`CorpusStats`: training shoppers, catalogue items, examples per
shopper, the mean count of a transition pair) and the privacy budget; a value set by hand is kept as it is. Each
choice carries its reason, which the run records in its params, tags and model card.

The rules (figures that shaped them: benchmarks/results/autosettings.md):
- batch: DP-SGD's noise on a step's mean gradient is noise_multiplier / (sample_rate x shoppers). The accountant's
  noise multiplier grows with the sample rate, slowly where Poisson sampling still amplifies privacy and about in
  proportion once it stops, so that noise stops falling as the batch grows. The batch doubles from MIN_BATCH while a
  doubling still takes at least NOISE_GAIN of that noise away (beyond that a step does twice the work for little),
  and while it keeps the run's steps: once `epochs` passes over the shoppers end the run before `max_steps`, a
  bigger batch buys quieter steps with fewer of them, and training fell below the zero-shot encoder that way
  (amazon2018 with the whole budget on DP-SGD at one full-batch step an epoch; the same setting under this rule is
  the no_transition_counts row of benchmarks/results/ablation.md).
  The same batch is used without DP, so that a model trained without DP differs from the DP one only in privacy.
- examples per shopper: a step works through SLOTS_PER_STEP example slots (batch x examples per shopper); when
  shoppers are few a sampled shopper brings more of its examples (its gradient over them is clipped once, so the
  privacy cost is the same), up to what most shoppers have (EXAMPLES_QUANTILE of examples per shopper).
- transition floor: the noise deviations taken off every noised transition count. Taking off more than the count
  of the pairs that carry the signal erases them along with the noise: the floor is the count of the quarter of
  transitions in the most-counted pairs (`CorpusStats.pair_count`) in noise deviations, within FLOOR_RANGE.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from ml.config import RunConfig
from ml.training.train import planned_steps

# a step's example slots (batch x examples per shopper): what the synthetic demo's step does (2,048 shoppers, 1 each)
SLOTS_PER_STEP = 2048
MIN_BATCH = 16
MAX_BATCH = 4096  # the training form's limit
# a doubling of the batch must take at least this share off the noise on a step's mean gradient
NOISE_GAIN = 0.15
# examples per shopper are capped at this quantile of the shoppers' example counts (more would be mostly padding)
EXAMPLES_QUANTILE = 0.9
# the pairs that carry the transition signal: the quarter of the transitions in the most-counted pairs. A few pairs
# hold many shoppers and most hold one on the real corpora, so a mean would follow the few; the quartile per corpus
# is in benchmarks/results/autosettings.md
PAIR_QUANTILE = 0.75
# the transition floor's range in noise deviations: the floors compared on a corpus (benchmarks/results/ablation.md
# and autosettings.md); outside the range no floor has been measured, so none is chosen there
FLOOR_RANGE = (1.0, 2.0)

# (sample_rate, steps) -> DP-SGD noise multiplier that the privacy budget allows
NoiseOf = Callable[[float, int], float]


@dataclass(frozen=True)
class CorpusStats:
    """What the rules read from the training data."""

    n_users: int  # training shoppers (the DP unit)
    n_items: int
    examples_quantile: float  # EXAMPLES_QUANTILE of the training examples per shopper
    examples_mean: float
    pairs_per_user: float  # mean distinct transition pairs a shopper adds to the counts (after the cap)
    # the PAIR_QUANTILE quantile, over the transitions of the capped counts, of the count of the transition's pair:
    # a quarter of the transitions are in pairs counted at least this often (0 when there are none)
    pair_count: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Choice:
    """One setting: its value, how it came ("auto": a rule here chose it; "hand": the run's config gave it;
    "derived": it follows from other settings), and why."""

    name: str
    value: Any
    how: str
    reason: str

    def describe(self) -> str:
        if self.how == "auto":
            return f"chosen automatically because {self.reason}"
        return f"{'set by hand' if self.how == 'hand' else 'derived'} ({self.reason})"


@dataclass(frozen=True)
class Resolved:
    """The run's config with every auto setting filled in, and the choices that filled them."""

    config: RunConfig
    choices: tuple[Choice, ...]
    stats: CorpusStats

    def to_dict(self) -> dict[str, Any]:
        return {"stats": self.stats.to_dict(), "choices": [{**asdict(c), "text": c.describe()} for c in self.choices]}

    def tags(self) -> dict[str, str]:
        """MLflow run tags: `settings.<name>` = "value (auto|hand|derived)"."""
        return {f"settings.{c.name}": f"{c.value} ({c.how})" for c in self.choices}


# ---------------------------------------------------------------------------------------------------
def user_pairs(sequence: Sequence[int], per_user: int) -> list[tuple[int, int]]:
    """A shopper's distinct consecutive (prev, next) pairs, the first `per_user` of them: as many as the capped
    counts hold of that shopper (which keeps a random `per_user` of them; the count statistics are the same)."""
    pairs = list(dict.fromkeys(zip(sequence[:-1], sequence[1:], strict=False)))
    return pairs[:per_user]


def transition_quantile(pair_counts: Sequence[int], q: float = 0.75) -> float:
    """The `q` quantile over transitions (not over distinct pairs) of the count of the transition's pair: each
    distinct pair counted `c` times stands for `c` transitions. 0 when there are none."""
    if not pair_counts:
        return 0.0
    counts = np.asarray(pair_counts, dtype=int)
    return float(np.quantile(np.repeat(counts.astype(float), counts), q))


def corpus_stats(
    example_users: Iterable[str], sequences: Sequence[Sequence[int]], n_items: int, pairs_per_user: int
) -> CorpusStats:
    """Statistics of the training data: `example_users` holds each training example's shopper, `sequences` each
    training shopper's items in time order (index space), `pairs_per_user` the cap on a shopper's transition pairs."""
    per_user: dict[str, int] = {}
    for user in example_users:
        per_user[user] = per_user.get(user, 0) + 1
    if not per_user:
        raise ValueError("no training examples: the rules need at least one shopper")
    counts = np.fromiter(per_user.values(), dtype=float)
    pair_counts: dict[tuple[int, int], int] = {}
    n_pairs = 0
    for seq in sequences:
        for pair in user_pairs([int(i) for i in seq], pairs_per_user):
            pair_counts[pair] = pair_counts.get(pair, 0) + 1
            n_pairs += 1
    return CorpusStats(
        n_users=len(per_user),
        n_items=int(n_items),
        examples_quantile=float(np.quantile(counts, EXAMPLES_QUANTILE)),
        examples_mean=float(counts.mean()),
        pairs_per_user=n_pairs / max(1, len(sequences)),
        pair_count=transition_quantile(list(pair_counts.values()), PAIR_QUANTILE),
    )


def member_sequences(sequences: Any, members: set[str], index_of: dict[str, int]) -> list[list[int]]:
    """Each training shopper's items in time order, in index space, from the train_sequences frame (user_id,
    position, item_id), as the transition counts read them (ml.privacy.transitions.transition_feature)."""
    rows = sequences[sequences["user_id"].isin(members)].sort_values(["user_id", "position"])
    return [[index_of[i] for i in items if i in index_of] for items in rows.groupby("user_id")["item_id"].agg(list)]


def step_noise(noise_multiplier: float, sample_rate: float, n_users: int) -> float:
    """Noise (std, in units of the clipping norm) on each coordinate of a step's mean clipped gradient."""
    return noise_multiplier / (sample_rate * n_users)


def choose_batch(n_users: int, noise_of: NoiseOf, epochs: int, max_steps: int) -> tuple[int, str]:
    """The batch: doubled from MIN_BATCH while the doubling takes at least NOISE_GAIN off the noise on a step's
    mean gradient (`step_noise`, with the noise multiplier the budget allows at that batch's sample rate and steps)
    and keeps the steps the run has at MIN_BATCH, and never above the shoppers or MAX_BATCH."""
    if n_users < 1:
        raise ValueError(f"n_users must be at least 1, got {n_users}")
    top = min(MAX_BATCH, n_users)

    def noise(batch: int) -> float:
        steps, rate = planned_steps(n_users, batch, epochs, max_steps)
        return step_noise(noise_of(rate, steps), rate, n_users)

    batch = min(MIN_BATCH, top)
    steps = planned_steps(n_users, batch, epochs, max_steps)[0]
    current = noise(batch)
    while batch < top:
        bigger = min(2 * batch, top)
        fewer = planned_steps(n_users, bigger, epochs, max_steps)[0]
        if fewer < steps:
            return batch, (
                f"doubling it to {bigger} would cut the run from {steps} to {fewer} steps ({epochs} epochs over "
                f"{n_users} shoppers): fewer, quieter steps trained worse"
            )
        next_noise = noise(bigger)
        if next_noise > (1 - NOISE_GAIN) * current:
            return batch, (
                f"doubling it to {bigger} would cut the DP noise on a step's mean gradient by "
                f"{1 - next_noise / current:.0%} ({current:.2g} to {next_noise:.2g}), less than "
                f"{NOISE_GAIN:.0%}, for twice the work ({n_users} shoppers)"
            )
        batch, current = bigger, next_noise
    return batch, (
        f"every doubling up to it cut the DP noise on a step's mean gradient by at least {NOISE_GAIN:.0%}"
        f" (to {current:.2g}); it is the limit ({'all ' + str(n_users) + ' shoppers' if top == n_users else 'MAX_BATCH'})"
    )


def choose_examples_per_user(batch_size: int, examples_quantile: float, trainable_layers: int) -> tuple[int, str]:
    """SLOTS_PER_STEP / batch examples of each sampled shopper, at most what most shoppers have, at least 1; 1 when
    encoder layers train (a step then takes one example per shopper)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if trainable_layers > 0:
        return 1, "encoder layers train, and a step then takes one example per shopper"
    slots = max(1, SLOTS_PER_STEP // batch_size)
    have = max(1, math.ceil(examples_quantile))
    if slots <= have:
        return slots, (
            f"a step works through {SLOTS_PER_STEP} example slots and the batch is {batch_size} shoppers "
            f"(under DP each shopper's gradient over its examples is clipped once)"
        )
    return have, (
        f"{EXAMPLES_QUANTILE:.0%} of shoppers have at most {have} example(s) (a step's {SLOTS_PER_STEP} "
        f"slots would allow {slots} for {batch_size} shoppers)"
    )


def choose_floor(pair_count: float, count_noise: float) -> tuple[float, str]:
    """The transition floor: the count of the pairs that carry the signal (`CorpusStats.pair_count`) in deviations of
    the counts' noise (`count_noise`, sigma x sqrt(pairs per shopper)), within FLOOR_RANGE, rounded to a tenth."""
    if count_noise <= 0:
        raise ValueError(f"count_noise must be positive, got {count_noise}")
    ratio = pair_count / count_noise
    floor = round(min(max(ratio, FLOOR_RANGE[0]), FLOOR_RANGE[1]), 1)
    return floor, (
        f"a quarter of the shoppers' transitions are in pairs counted at least {pair_count:g} times, "
        f"{ratio:.2f} deviations of the counts' noise ({count_noise:.2f}); a higher floor would erase those "
        f"pairs with the noise (kept within {FLOOR_RANGE[0]:g}..{FLOOR_RANGE[1]:g})"
    )


def resolve(cfg: RunConfig, stats: CorpusStats, noise_of: NoiseOf, transitions_sigma: float | None) -> Resolved:
    """Fill in every auto setting of `cfg` from `stats` and the privacy budget (`noise_of`: DP-SGD's noise
    multiplier at a sample rate and steps; `transitions_sigma`: the transition counts' noise multiplier, None when
    the counts are off or not noised). Settings given by hand are kept."""
    choices = []
    batch = cfg.batch_size
    if batch:
        choices.append(Choice("batch_size", batch, "hand", "RunConfig.batch_size"))
    else:
        batch, why = choose_batch(stats.n_users, noise_of, cfg.epochs, cfg.max_steps)
        choices.append(Choice("batch_size", batch, "auto", why))
    steps, rate = planned_steps(stats.n_users, batch, cfg.epochs, cfg.max_steps)
    choices.append(
        Choice(
            "steps",
            steps,
            "derived",
            f"max_steps {cfg.max_steps}, at most epochs {cfg.epochs} x "
            f"{round(1 / rate)} steps per epoch; sample rate {rate:.4g}",
        )
    )
    per_user = cfg.examples_per_user
    if per_user:
        choices.append(Choice("examples_per_user", per_user, "hand", "RunConfig.examples_per_user"))
    else:
        per_user, why = choose_examples_per_user(batch, stats.examples_quantile, cfg.trainable_layers)
        choices.append(Choice("examples_per_user", per_user, "auto", why))
    floor = cfg.dp.transitions_floor
    if floor is not None:
        choices.append(Choice("dp.transitions_floor", floor, "hand", "DPConfig.transitions_floor"))
    elif transitions_sigma is None or stats.pair_count == 0:
        floor = FLOOR_RANGE[1]
        choices.append(
            Choice(
                "dp.transitions_floor",
                floor,
                "auto",
                "the transition counts are not noised in this run (no DP or no counts): it is unused",
            )
        )
    else:
        floor, why = choose_floor(stats.pair_count, transitions_sigma * math.sqrt(cfg.dp.transitions_per_user))
        choices.append(Choice("dp.transitions_floor", floor, "auto", why))
    config = replace(
        cfg, batch_size=batch, examples_per_user=per_user, dp=replace(cfg.dp, transitions_floor=float(floor))
    )
    return Resolved(config=config, choices=tuple(choices), stats=stats)


def markdown(resolved: dict[str, Any]) -> list[str]:
    """The model card's "Training settings" section from `Resolved.to_dict()` (as the train stage records it)."""
    lines = ["## Training settings", "", "| setting | value | why |", "|---|---|---|"]
    lines += [f"| {c['name']} | {c['value']} | {c['text']} |" for c in resolved["choices"]]
    s = resolved["stats"]
    lines += [
        "",
        f"Read from the training data: {s['n_users']} shoppers, {s['n_items']} items, "
        f"{s['examples_mean']:.1f} examples per shopper ({EXAMPLES_QUANTILE:.0%} have at most "
        f"{s['examples_quantile']:.0f}), {s['pairs_per_user']:.1f} transition pairs per shopper, "
        f"a quarter of the transitions in pairs counted at least {s['pair_count']:g} times.",
        "",
        "",
    ]
    return lines


def resolve_run(
    cfg: RunConfig, example_users: Sequence[str], sequences: Sequence[Sequence[int]], n_items: int
) -> Resolved:
    """`resolve` with the run's privacy budget: DP-SGD's noise multiplier from the privacy plan (the same split with
    the transition counts that training uses), also when DP is off, so that a model trained without DP gets the
    DP model's settings and differs from it only in privacy."""
    from ml.privacy.accounting import default_delta, plan_budget

    dp = cfg.dp
    stats = corpus_stats(example_users, sequences, n_items, dp.transitions_per_user)
    delta = dp.delta or default_delta(max(2, stats.n_users))

    def noise_of(rate: float, steps: int) -> float:
        return plan_budget(
            dp.target_epsilon, delta, rate, steps, dp.transitions_share, dp.transitions_per_user
        ).noise_multiplier

    sigma = None
    if dp.enabled and dp.transitions_share > 0 and dp.transitions_floor is None:
        # the counts' noise depends on the budget alone, not on the sample rate or steps
        sigma = plan_budget(
            dp.target_epsilon, delta, 1.0, 1, dp.transitions_share, dp.transitions_per_user
        ).transitions_sigma
    return resolve(cfg, stats, noise_of, sigma)
