"""Which parameters DP-SGD trains, and at what rate: the regime rule between the noise of a step and the heads.

Under DP every trained coordinate gets the same Gaussian noise whatever its signal. The dense heads (the history
projection, dim x dim, and the item bias, one per item) carry little signal per coordinate when a step samples few
shoppers, so there they stay fixed (BiEncoder.freeze_dense_heads) and the scalar heads left train at a lower rate;
where the step is quiet the heads learn and the public text features are dropped (BiEncoder.drop_text_features).
The two thresholds sit between amazon2018 (256 shoppers a step for 3,686 items: heads fixed at every epsilon of
benchmarks/results/privacy.md) and the synthetic demo (2,048 shoppers a step for 1,200 items: heads trained,
benchmarks/results/pipeline.md).
"""

from __future__ import annotations

from ml.training.model import BiEncoder

# DP noise (std) on each coordinate of a step's mean clipped gradient, noise_multiplier / shoppers per step,
# above which the dense heads stay fixed: with more, training them pulled amazon2018 below the zero-shot encoder.
NOISY_DP_STEP = 0.004
# The same noise against what one item's bias sees in a step, noise_multiplier x items / shoppers per step (the
# expected number of sampled shoppers per catalogue item): above it the item bias is mostly noise however quiet
# the step is overall. amazon2018 at epsilon 16 passes the rule above alone and fails this one; fixing its heads
# is the better of the two (benchmarks/results/privacy.md, eps16).
NOISY_DP_ITEM_STEP = 4.0
# learning-rate factor for the scalar heads left when the dense heads are fixed: at the full DP rate the noise
# swings them by several logits
NOISY_DP_LR_SCALE = 0.1


def dense_heads_too_noisy(noise_multiplier: float, shoppers_per_step: float, n_items: int) -> bool:
    """Whether DP-SGD's noise would drown the dense heads (history projection, item bias), which then stay fixed
    (BiEncoder.freeze_dense_heads): too much noise on each coordinate of a step's mean gradient (NOISY_DP_STEP), or
    too much against the shoppers a step brings each item (NOISY_DP_ITEM_STEP)."""
    if shoppers_per_step <= 0:
        raise ValueError(f"shoppers_per_step must be positive, got {shoppers_per_step}")
    return (
        noise_multiplier / shoppers_per_step > NOISY_DP_STEP
        or noise_multiplier * n_items / shoppers_per_step > NOISY_DP_ITEM_STEP
    )


def apply_dp_regime(
    model: BiEncoder, noise_multiplier: float | None, shoppers_per_step: float, n_items: int, learning_rate: float
) -> float:
    """Set which heads `model` trains for this DP noise (None: no DP, nothing changes); returns the learning rate.

    Call it once, after the model's lexical and transition tables are set and before training: dropping the text
    features clears the lexical table, and a table set afterwards would come back."""
    if noise_multiplier is None:
        return learning_rate
    if dense_heads_too_noisy(noise_multiplier, shoppers_per_step, n_items):
        model.freeze_dense_heads()
        return learning_rate * NOISY_DP_LR_SCALE
    model.drop_text_features()  # the dense heads learn; the text features did not help then
    return learning_rate
