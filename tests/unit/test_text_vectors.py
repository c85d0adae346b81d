"""The cache of the pretrained encoder's catalogue vectors: the encoder's own vectors, each text encoded once, and
a file that is stale, unreadable or too large rebuilt rather than trusted."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ml.training import text_vectors
from ml.training.text_vectors import TextVectors, catalogue_vectors, weights_digest


class Encoder:
    """A deterministic stand-in for MiniLM: a text's vector depends on the text (and a `shift` that plays a changed
    encoder); it records every text it was asked for."""

    def __init__(self, shift: float = 0.0) -> None:
        self.shift, self.asked = shift, []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.asked.extend(texts)
        rows = [np.random.default_rng(abs(hash(t)) % 2**32).normal(size=8) + self.shift for t in texts]
        return np.array(rows, dtype=np.float32).reshape(len(texts), 8)


def test_vectors_are_the_encoders_and_a_second_pass_encodes_only_the_check(tmp_path):
    texts = [f"item {i}" for i in range(20)]
    first = Encoder()
    cache = TextVectors(tmp_path, "d", 48)
    got = cache.encode(texts, first)
    np.testing.assert_array_equal(got, Encoder()(texts))
    assert first.asked == texts
    again = Encoder()
    np.testing.assert_array_equal(TextVectors(tmp_path, "d", 48).encode(texts, again), got)
    assert len(again.asked) == text_vectors.CHECKED and set(again.asked) <= set(texts)


def test_only_new_texts_are_encoded_each_once_and_order_follows_the_request(tmp_path):
    cache = TextVectors(tmp_path, "d", 48)
    cache.encode(["a", "b", "c"], Encoder())
    enc = Encoder()
    got = cache.encode(["d", "a", "d", "e", "b"], enc)
    assert [t for t in enc.asked if t in {"d", "e"}] == ["d", "e"]  # after the check's cached texts
    np.testing.assert_array_equal(got, Encoder()(["d", "a", "d", "e", "b"]))


def test_another_token_limit_or_digest_is_another_file(tmp_path):
    TextVectors(tmp_path, "d", 48).encode(["a"], Encoder())
    for other in (TextVectors(tmp_path, "d", 32), TextVectors(tmp_path, "e", 48)):
        enc = Encoder()
        other.encode(["a"], enc)
        assert enc.asked == ["a"]
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_a_file_the_encoder_disagrees_with_is_rebuilt(tmp_path, caplog):
    cache = TextVectors(tmp_path, "d", 48)
    cache.encode(["a", "b"], Encoder())
    changed = Encoder(shift=0.5)  # the encoding changed under the same digest
    with caplog.at_level(logging.WARNING):
        got = cache.encode(["a", "b"], changed)
    assert "disagrees" in caplog.text
    np.testing.assert_array_equal(got, Encoder(shift=0.5)(["a", "b"]))
    np.testing.assert_array_equal(cache.encode(["a", "b"], Encoder(shift=0.5)), got)  # and it is kept


def test_an_unreadable_file_is_set_aside_and_rebuilt(tmp_path, caplog):
    cache = TextVectors(tmp_path, "d", 48)
    cache.path.write_bytes(b"not an npz")
    with caplog.at_level(logging.WARNING):
        got = cache.encode(["a"], Encoder())
    assert "unreadable" in caplog.text
    assert cache.path.with_suffix(".bad").read_bytes() == b"not an npz"
    np.testing.assert_array_equal(got, Encoder()(["a"]))


def test_past_the_cap_the_oldest_texts_not_asked_for_are_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(text_vectors, "MAX_ENTRIES", 4)
    cache = TextVectors(tmp_path, "d", 48)
    cache.encode(["a", "b", "c"], Encoder())
    cache.encode(["c", "d", "e"], Encoder())
    with np.load(cache.path) as data:
        kept = set(data["keys"].tolist())
    assert kept == {text_vectors.text_key(t) for t in ("b", "c", "d", "e")}


def test_an_encoder_that_returns_the_wrong_count_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="for 2 texts"):
        TextVectors(tmp_path, "d", 48).encode(["a", "b"], lambda texts: np.zeros((1, 8), dtype=np.float32))


def test_without_a_folder_every_text_is_encoded_and_the_digest_follows_the_files(tmp_path):
    enc = Encoder()
    np.testing.assert_array_equal(catalogue_vectors(None, ["a", "a"], 48, enc), Encoder()(["a", "a"]))
    assert enc.asked == ["a", "a"] and not list(tmp_path.iterdir())
    (tmp_path / "model.safetensors").write_bytes(b"w1")
    first = weights_digest(tmp_path)
    (tmp_path / "model.safetensors").write_bytes(b"w2-")
    assert weights_digest(tmp_path) != first


def test_the_models_starting_table_serves_the_zero_shot_baseline_unchanged(tmp_path):
    """What the train stage writes (the model's pretrained encoder at init, some layers trainable) is what the
    evaluate stage's zero-shot encoder computes: it reads the file and encodes only the check's texts."""
    from ml.evaluation.baselines import zero_shot_encoder
    from ml.training.encoder import load_encoder
    from ml.training.model import BiEncoder

    texts = [f"Brand {i} steel bolt, {i} mm. Category: hardware" for i in range(12)]
    bert, tokenizer = load_encoder()
    model = BiEncoder(bert, n_items=len(texts), trainable_layers=1)
    train_side = catalogue_vectors(tmp_path, texts, 48, lambda t: model.encode_texts(tokenizer, t, 48).numpy())
    zero_shot = zero_shot_encoder()
    asked: list[str] = []

    def encode(t: list[str]) -> np.ndarray:
        asked.extend(t)
        return zero_shot(t, 48)

    evaluate_side = catalogue_vectors(tmp_path, texts, 48, encode)
    np.testing.assert_array_equal(evaluate_side, train_side)
    np.testing.assert_allclose(zero_shot(texts, 48), evaluate_side, atol=1e-6)
    assert len(asked) == text_vectors.CHECKED
