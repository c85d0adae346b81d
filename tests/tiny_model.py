"""A tiny bi-encoder for the training tests: a one-layer 16-wide BERT (frozen) under MiniLM's tokenizer (the
`tokenizer` fixture of tests/conftest.py), a twelve-item catalogue, shoppers whose next item follows a
pattern, and the short training run the tests share."""

from __future__ import annotations

from typing import Any

import torch
from transformers import BertConfig, BertModel, PreTrainedTokenizerBase

from ml.training.dp_sgd import DPSettings
from ml.training.examples import Examples
from ml.training.model import BiEncoder
from ml.training.train import TrainResult, train_bi_encoder

N_ITEMS, N_SHOPPERS, MAX_HISTORY = 12, 40, 4


def tiny_model(tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> tuple[BiEncoder, list[str]]:
    """A one-layer 16-wide BERT (frozen) with its item table filled from the catalogue text."""
    torch.manual_seed(seed)
    bert = BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=64,
        ),
        add_pooling_layer=False,
    )
    model = BiEncoder(
        bert,
        n_items=N_ITEMS,
        trainable_layers=0,
        max_history=MAX_HISTORY,
        item_category=torch.arange(N_ITEMS) % 3,
        item_brand=torch.arange(N_ITEMS) % 4,
    )
    texts = [f"item {i} colour {['red', 'blue', 'green'][i % 3]} size {i * 7 % 5}" for i in range(N_ITEMS)]
    with torch.no_grad():
        model.item_table.copy_(model.encode_texts(tokenizer, texts, 16))
    return model.eval(), texts


def tiny_examples() -> Examples:
    """Next item = the item after the newest history item: a pattern the transition-free heads can half learn."""
    users, histories, targets = [], [], []
    for u in range(N_SHOPPERS):
        for k in range(2):
            last = (u + k) % N_ITEMS
            users.append(f"u{u}")
            histories.append([(last + 5) % N_ITEMS, last])
            targets.append((last + 1) % N_ITEMS)
    return Examples(users, histories, [None] * len(targets), targets)


def train_tiny(
    model: BiEncoder,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    *,
    max_steps: int,
    dp: DPSettings | None,
    **options: Any,
) -> TrainResult:
    """`max_steps` steps of one epoch over `tiny_examples` (batch 8, learning rate 0.2, seed 3); `options` are
    train_bi_encoder's other keywords (examples_per_user, ...)."""
    return train_bi_encoder(
        model,
        tokenizer,
        tiny_examples(),
        texts,
        epochs=1,
        max_steps=max_steps,
        batch_size=8,
        learning_rate=0.2,
        max_history=MAX_HISTORY,
        max_query_tokens=8,
        max_item_tokens=16,
        seed=3,
        dp=dp,
        **options,
    )
