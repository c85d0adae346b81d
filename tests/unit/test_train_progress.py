"""Training says how far it is: a log line with the step, the loss and the DP epsilon spent so far (the task log
and `vetted run` show logging; a tqdm bar draws only in an interactive terminal)."""

from __future__ import annotations

import logging
import re

from ml.training.dp_sgd import DPSettings
from tests.tiny_model import tiny_model, train_tiny


def test_dp_training_logs_steps_loss_and_the_epsilon_spent(tokenizer, caplog):
    model, texts = tiny_model(tokenizer)
    model.freeze_dense_heads()
    with caplog.at_level(logging.INFO, logger="ml.training.train"):
        result = train_tiny(
            model, tokenizer, texts, max_steps=4, dp=DPSettings(noise_multiplier=1.0, delta=1e-3, max_grad_norm=1.0)
        )
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("train step")]
    assert [re.match(r"train step (\d+)/4", line).group(1) for line in lines] == ["1", "2", "3", "4"]
    spent = [float(re.search(r"epsilon spent ([0-9.]+)", line).group(1)) for line in lines]
    assert spent == sorted(spent) and spent[0] > 0  # the budget only grows
    assert abs(spent[-1] - result.dp["epsilon_sgd"]) < 1e-3  # the last line is what the run reports
    assert all(re.search(r"loss \d+\.\d{4}", line) for line in lines)
