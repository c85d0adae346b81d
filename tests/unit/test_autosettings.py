"""The training settings chosen from the data (ml.training.autosettings), on hand-worked cases."""

import math

import pandas as pd
import pytest

from ml.config import DPConfig, RunConfig
from ml.training import autosettings as a


def _stats(**changes) -> a.CorpusStats:
    base = dict(
        n_users=2560, n_items=3686, examples_quantile=8.0, examples_mean=4.1, pairs_per_user=3.9, pair_count=1.0
    )
    return a.CorpusStats(**{**base, **changes})


def test_corpus_stats_count_examples_and_transition_pairs_by_hand():
    # shoppers u (3 examples), v (1): quantile 0.9 of [3, 1] = 1 + 0.9 * 2 = 2.8; mean 2
    # sequences: [0,1,2] -> (0,1),(1,2); [0,1,0,1] -> (0,1),(1,0) (the repeat (0,1) once); [0,1] -> (0,1)
    # pair counts: (0,1) 3, (1,2) 1, (1,0) 1 -> transitions [3,3,3,1,1]: upper quartile 3, pairs per shopper 5/3
    stats = a.corpus_stats(["u", "u", "v", "u"], [[0, 1, 2], [0, 1, 0, 1], [0, 1]], n_items=3, pairs_per_user=8)
    assert stats.n_users == 2 and stats.n_items == 3
    assert stats.examples_quantile == pytest.approx(2.8)
    assert stats.examples_mean == pytest.approx(2.0)
    assert stats.pairs_per_user == pytest.approx(5 / 3)
    assert stats.pair_count == pytest.approx(3.0)


def test_the_pair_cap_keeps_the_first_distinct_pairs():
    assert a.user_pairs([0, 1, 2, 3, 0, 1], per_user=2) == [(0, 1), (1, 2)]
    stats = a.corpus_stats(["u"], [[0, 1, 2, 3]], n_items=4, pairs_per_user=1)
    assert stats.pairs_per_user == 1.0


def test_transition_quantile_weighs_each_pair_by_its_count():
    # pairs counted 1, 1, 6: transitions [1, 1, 6 x 6]; the upper quartile is 6, the median 6, the 0.1 quantile 1
    assert a.transition_quantile([1, 1, 6], 0.75) == 6.0
    assert a.transition_quantile([1, 1, 6], 0.1) == 1.0
    assert a.transition_quantile([], 0.75) == 0.0


def test_the_batch_doubles_while_the_noise_per_step_falls_by_at_least_the_gain():
    # a hand-made accountant: noise multiplier 1 up to a sample rate of 0.1, then 10 x rate. With 2,560 shoppers and
    # every batch of 100 steps: noise per step = sigma / (rate x 2560). 16 .. 256: sigma 1, noise halves each doubling;
    # 256 -> 512: rate 0.1 -> 0.2, sigma 1 -> 2: noise unchanged, so 256 stays
    def noise_of(rate: float, steps: int) -> float:
        return max(1.0, 10 * rate)

    batch, why = a.choose_batch(2560, noise_of, epochs=1000, max_steps=100)
    assert batch == 256
    assert "512" in why and "0%" in why


def test_the_batch_stops_at_the_shoppers_or_max_batch():
    assert a.choose_batch(40, lambda r, s: 1.0, epochs=1000, max_steps=100)[0] == 40
    batch, why = a.choose_batch(10**6, lambda r, s: 1.0, epochs=20, max_steps=100)
    assert batch == a.MAX_BATCH and "MAX_BATCH" in why


def test_the_batch_with_the_real_accountant_fits_amazon2018_and_the_demo():
    """The privacy plan's noise at epsilon 8 (85% of it on the transition counts): the hand-chosen batches of both
    corpora come out (256 for amazon2018's 2,586 training shoppers, 2,048 for the demo's 16,854)."""
    from ml.privacy.accounting import default_delta, plan_budget

    def noise_for(n_users):
        return lambda rate, steps: plan_budget(8.0, default_delta(n_users), rate, steps, 0.85, 8).noise_multiplier

    assert a.choose_batch(2586, noise_for(2586), epochs=20, max_steps=100)[0] == 256
    assert a.choose_batch(16854, noise_for(16854), epochs=20, max_steps=100)[0] == 2048


def test_the_batch_keeps_the_runs_steps():
    # noise that halves with every doubling: only the steps stop it. 2,560 shoppers, 20 epochs, 100 steps: a batch
    # of 512 still makes 5 steps an epoch (100 in all); 1,024 would make 3 (60 in all)
    batch, why = a.choose_batch(2560, lambda r, s: 1.0, epochs=20, max_steps=100)
    assert batch == 512
    assert "1024" in why and "from 100 to 60 steps" in why
    # 40 shoppers and 20 epochs: 60 steps at a batch of 16, 40 at 32
    assert a.choose_batch(40, lambda r, s: 1.0, epochs=20, max_steps=100)[0] == 16


def test_the_whole_budget_on_dp_sgd_keeps_amazon2018_off_a_full_batch():
    """amazon2018's 2,586 training shoppers with no transition counts (the whole epsilon 8 on DP-SGD): each doubling
    quiets a step by 15% or more up to the full batch, where one step an epoch would leave 20 steps of 100."""
    from ml.privacy.accounting import default_delta, plan_budget

    def noise_of(rate, steps):
        return plan_budget(8.0, default_delta(2586), rate, steps, 0.0, 8).noise_multiplier

    assert a.choose_batch(2586, noise_of, epochs=20, max_steps=100)[0] == 512


@pytest.mark.parametrize(
    ("batch", "quantile", "layers", "expected"),
    [
        (256, 8.0, 0, 8),  # 2048 / 256 = 8 slots, shoppers have 8
        (256, 5.2, 0, 6),  # most shoppers have at most 6 (ceil 5.2): no more slots than that
        (2048, 17.0, 0, 1),  # the demo: one per shopper
        (4096, 11.0, 0, 1),  # more shoppers than slots: still one each
        (100, 40.0, 0, 20),  # 2048 // 100 = 20
        (256, 8.0, 2, 1),  # encoder layers train: one per shopper
    ],
)
def test_examples_per_user_share_the_step_slots(batch, quantile, layers, expected):
    assert a.choose_examples_per_user(batch, quantile, layers)[0] == expected


@pytest.mark.parametrize(
    ("pair_count", "noise", "expected"),
    [
        (1.0, 1.83, 1.0),  # amazon2018: 0.55 deviations, the range's bottom
        (6.0, 2.01, 2.0),  # the demo: 2.99 deviations, the range's top
        (3.0, 2.0, 1.5),  # in between: the ratio, to a tenth
    ],
)
def test_the_floor_is_the_signal_pairs_count_in_noise_deviations(pair_count, noise, expected):
    assert a.choose_floor(pair_count, noise)[0] == expected


def test_the_floor_needs_noise():
    with pytest.raises(ValueError, match="count_noise must be positive"):
        a.choose_floor(1.0, 0.0)


def test_resolve_fills_the_auto_settings_and_keeps_those_set_by_hand():
    def noise_of(rate: float, steps: int) -> float:
        return max(1.0, 10 * rate)

    auto = a.resolve(RunConfig(), _stats(), noise_of, transitions_sigma=0.5)
    assert (auto.config.batch_size, auto.config.examples_per_user) == (256, 8)
    # noise of the counts 0.5 x sqrt(8) = 1.41; pair count 1 is 0.71 deviations: floor 1
    assert auto.config.dp.transitions_floor == 1.0
    assert {c.name: c.how for c in auto.choices} == {
        "batch_size": "auto",
        "steps": "derived",
        "examples_per_user": "auto",
        "dp.transitions_floor": "auto",
    }
    assert auto.tags()["settings.batch_size"] == "256 (auto)"
    hand = a.resolve(
        RunConfig(batch_size=64, examples_per_user=2, dp=DPConfig(transitions_floor=1.5)),
        _stats(),
        noise_of,
        transitions_sigma=0.5,
    )
    assert (hand.config.batch_size, hand.config.examples_per_user, hand.config.dp.transitions_floor) == (64, 2, 1.5)
    assert all(c.how in ("hand", "derived") for c in hand.choices)
    assert hand.tags()["settings.dp.transitions_floor"] == "1.5 (hand)"
    # steps: 2560 shoppers at 64 a step = 40 a epoch; 20 epochs = 800 > max_steps 100
    assert next(c for c in hand.choices if c.name == "steps").value == 100


def test_without_noised_counts_the_floor_is_marked_unused():
    r = a.resolve(RunConfig(dp=DPConfig(enabled=False)), _stats(), lambda q, s: 1.0, transitions_sigma=None)
    floor = next(c for c in r.choices if c.name == "dp.transitions_floor")
    assert "unused" in floor.reason


def test_resolve_run_reads_the_budget_and_gives_a_run_without_dp_the_dp_settings():
    users = [f"u{i}" for i in range(300) for _ in range(3)]
    seqs = [[i % 50, (i + 1) % 50, (i + 2) % 50] for i in range(300)]
    with_dp = a.resolve_run(RunConfig(), users, seqs, n_items=50)
    without = a.resolve_run(RunConfig(dp=DPConfig(enabled=False)), users, seqs, n_items=50)
    assert with_dp.config.batch_size == without.config.batch_size
    assert with_dp.config.examples_per_user == without.config.examples_per_user == 3
    assert 1.0 <= with_dp.config.dp.transitions_floor <= 2.0


def test_member_sequences_order_by_position_and_keep_members_and_known_items():
    frame = pd.DataFrame(
        {"user_id": ["b", "a", "a", "c", "a"], "position": [0, 1, 0, 0, 2], "item_id": ["x", "y", "x", "x", "zz"]}
    )
    assert a.member_sequences(frame, {"a", "b"}, {"x": 0, "y": 1}) == [[0, 1], [0]]


def test_the_card_section_lists_each_setting_and_why():
    r = a.resolve(RunConfig(batch_size=128), _stats(), lambda q, s: 1.0, transitions_sigma=0.5)
    text = "\n".join(a.markdown(r.to_dict()))
    assert text.startswith("## Training settings")
    assert "| batch_size | 128 | set by hand (RunConfig.batch_size) |" in text
    assert "| examples_per_user | 8 | chosen automatically because" in text
    assert "2560 shoppers" in text and math.isfinite(r.stats.pair_count)
