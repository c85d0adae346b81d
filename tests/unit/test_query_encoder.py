"""The exported query encoder: ONNX Runtime gives the torch query tower's vectors (fp32 to float rounding, int8
close), tokenizes as the model does, is chosen and validated by the search settings, saves and loads with the
model (and a model without it still loads, on torch), and the registration check refuses a file that is not the
model's encoder."""

from __future__ import annotations

import json
import threading
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from ml.config import ConfigError, Settings
from ml.registry.integrity import digest_tags
from ml.search.engine import SearchSettings
from ml.search.onnx_encoder import (
    MIN_COSINE,
    ONNX_FILES,
    PROBE_QUERIES,
    QueryEncoder,
    check_against_torch,
    export_query_encoder,
    onnx_path,
)
from ml.training.encoder import model_dir, tokenize
from ml.training.model import BiEncoder
from ml.training.recommender import Recommender, RecommenderSettings

MAX_TOKENS = 12
N_ITEMS = 6
QUERIES = [
    "red running shoes",
    "mug",
    "Stainless STEEL kettle, 1.7 litre, with a blue light and auto shut-off",
    "café crème",
    "a",
    "usb c cable 2m braided",
]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)


def _model(tokenizer, seed: int = 0) -> BiEncoder:
    """A two-layer 32-wide BERT with random weights: the export and the runtime do not depend on MiniLM's."""
    torch.manual_seed(seed)
    bert = BertModel(
        BertConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
        ),
        add_pooling_layer=False,
    )
    return BiEncoder(bert, n_items=N_ITEMS, trainable_layers=0, max_history=4).eval()


def _items() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": [f"i{j}" for j in range(N_ITEMS)],
            "title": [f"item {j}" for j in range(N_ITEMS)],
            "brand": [f"b{j % 2}" for j in range(N_ITEMS)],
            "category": ["c"] * N_ITEMS,
        }
    )


def _recommender(tokenizer, precision: str = "int8", cache: int = 16, seed: int = 0) -> Recommender:
    settings = RecommenderSettings(
        0.05, 4, MAX_TOKENS, 16, search=SearchSettings(encoder_precision=precision, query_cache_size=cache)
    )
    return Recommender(_model(tokenizer, seed), tokenizer, _items(), settings)


@pytest.fixture(scope="module")
def exported(tokenizer, tmp_path_factory):
    model = _model(tokenizer)
    folder = tmp_path_factory.mktemp("onnx")
    paths = export_query_encoder(model, tokenizer, folder, MAX_TOKENS)
    torch_vectors = model.encode_texts(tokenizer, QUERIES, MAX_TOKENS).numpy()
    return {"model": model, "folder": folder, "paths": paths, "torch": torch_vectors}


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


# ---------------------------------------------------------------------------------------------- the export
def test_the_fp32_encoder_gives_the_torch_query_vectors(tokenizer, exported):
    encoder = QueryEncoder(exported["paths"]["fp32"], tokenizer, MAX_TOKENS)
    np.testing.assert_allclose(encoder.encode(QUERIES), exported["torch"], atol=1e-5)  # torch: one padded batch
    for query, expected in zip(QUERIES, exported["torch"], strict=True):
        np.testing.assert_allclose(encoder.encode([query])[0], expected, atol=1e-5)
    assert encoder.encode([]).shape == (0, exported["torch"].shape[1])


def test_the_exported_graph_takes_padded_batches_of_any_size(exported, tokenizer):
    """Dynamic batch and token axes, the padding masked (the encoder itself sends one query at a time)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported["paths"]["fp32"]), providers=["CPUExecutionProvider"])
    tokens = tokenize(tokenizer, QUERIES, MAX_TOKENS)
    assert not bool(tokens["attention_mask"].all())
    (got,) = session.run(
        None, {"input_ids": tokens["input_ids"].numpy(), "attention_mask": tokens["attention_mask"].numpy()}
    )
    np.testing.assert_allclose(got, exported["torch"], atol=1e-5)


def test_the_int8_encoder_is_close_to_torch_and_smaller(tokenizer, exported):
    encoder = QueryEncoder(exported["paths"]["int8"], tokenizer, MAX_TOKENS)
    got = encoder.encode(QUERIES)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # still unit vectors
    assert _cosines(got, exported["torch"]).min() >= MIN_COSINE["int8"]
    assert not np.allclose(got, exported["torch"], atol=1e-5)  # the weights really are quantized
    assert exported["paths"]["int8"].stat().st_size < exported["paths"]["fp32"].stat().st_size / 2


def test_the_encoder_tokenizes_as_the_model_does(tokenizer, exported):
    encoder = QueryEncoder(exported["paths"]["fp32"], tokenizer, MAX_TOKENS)
    queries = [*QUERIES, *PROBE_QUERIES]
    reference = tokenize(tokenizer, queries, MAX_TOKENS)
    for row, ids in enumerate(encoder.token_ids(queries)):
        mask = reference["attention_mask"][row] == 1
        assert list(ids) == reference["input_ids"][row][mask].tolist()
    assert max(len(ids) for ids in encoder.token_ids(queries)) == MAX_TOKENS  # the long ones are cut


def test_a_folder_without_an_export_or_a_file_that_is_not_one_is_refused_clearly(tokenizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="no exported query encoder"):
        QueryEncoder(tmp_path / ONNX_FILES["fp32"], tokenizer, MAX_TOKENS)
    broken = tmp_path / ONNX_FILES["int8"]
    broken.write_bytes(b"not an onnx graph")
    with pytest.raises(ValueError, match="not a query encoder ONNX Runtime can load"):
        QueryEncoder(broken, tokenizer, MAX_TOKENS)
    with pytest.raises(ValueError, match="precision must be one of"):
        onnx_path(tmp_path, "fp16")


# ---------------------------------------------------------------------------------------------- the cache
def test_the_encoder_caches_by_the_text_it_sees(tokenizer, exported):
    encoder = QueryEncoder(exported["paths"]["fp32"], tokenizer, MAX_TOKENS, cache_size=2)
    first = encoder.encode(["red running shoes"])
    again = encoder.encode(["Red   RUNNING shoes"])  # the tokenizer lower-cases and splits on spaces
    np.testing.assert_array_equal(first, again)
    assert encoder.cache.stats().hits == 1 and len(encoder.cache) == 1
    batch = encoder.encode(["mug", "mug", "red running shoes"])  # a repeat inside a call is encoded once
    np.testing.assert_allclose(
        batch,
        exported["model"].encode_texts(tokenizer, ["mug", "mug", "red running shoes"], MAX_TOKENS).numpy(),
        atol=1e-5,
    )
    assert len(encoder.cache) == 2 and encoder.cache.stats().misses == 2
    encoder.encode(["a"])  # the least recently used entry goes: "mug" ("red running shoes" was asked for last)
    keys = encoder.token_ids(["mug", "red running shoes", "a"])
    assert keys[0] not in encoder.cache and keys[1] in encoder.cache and keys[2] in encoder.cache
    assert encoder.cache.stats().evictions == 1


def test_a_querys_vector_does_not_depend_on_the_queries_beside_it(tokenizer, exported):
    """int8 activations are quantized per tensor: a padded batch would give each query another vector."""
    encoder = QueryEncoder(exported["paths"]["int8"], tokenizer, MAX_TOKENS)
    together = encoder.encode(QUERIES)
    alone = np.stack([QueryEncoder(exported["paths"]["int8"], tokenizer, MAX_TOKENS).encode([q])[0] for q in QUERIES])
    np.testing.assert_array_equal(together, alone)


def test_the_encoder_answers_the_same_from_many_threads(tokenizer, exported):
    encoder = QueryEncoder(exported["paths"]["int8"], tokenizer, MAX_TOKENS, cache_size=3)
    expected = QueryEncoder(exported["paths"]["int8"], tokenizer, MAX_TOKENS).encode(QUERIES)
    failures: list[str] = []

    def work(offset: int) -> None:
        for i in range(40):
            row = (offset + i) % len(QUERIES)
            got = encoder.encode([QUERIES[row]])[0]
            if not np.allclose(got, expected[row], atol=1e-5):
                failures.append(f"thread {offset}, query {QUERIES[row]!r}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    stats = encoder.cache.stats()
    assert stats.hits + stats.misses == 8 * 40 and stats.size <= 3


# ---------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "change",
    [
        {"encoder_precision": "fp16"},
        {"encoder_precision": "INT8"},
        {"query_cache_size": -1},
        {"query_cache_size": 2.5},
        {"query_cache_size": True},
    ],
)
def test_search_settings_refuse_an_unknown_precision_or_cache_size(change):
    with pytest.raises(ValueError, match=next(iter(change))):
        SearchSettings(**change)


def test_search_settings_default_to_int8_with_a_cache_and_accept_fp32_and_no_cache():
    assert (SearchSettings().encoder_precision, SearchSettings().query_cache_size) == ("int8", 4096)
    assert SearchSettings(encoder_precision="fp32", query_cache_size=0).query_cache_size == 0


def test_the_service_setting_chooses_onnx_or_torch(tmp_path):
    assert Settings.from_env({"VETTED_HOME": str(tmp_path)}).query_encoder == "onnx"
    assert Settings.from_env({"VETTED_HOME": str(tmp_path), "VETTED_QUERY_ENCODER": "torch"}).query_encoder == "torch"
    with pytest.raises(ConfigError, match="VETTED_QUERY_ENCODER"):
        Settings.from_env({"VETTED_HOME": str(tmp_path), "VETTED_QUERY_ENCODER": "tensorflow"})


# ---------------------------------------------------------------------------------------------- save and load
def test_a_saved_model_holds_both_exports_and_serves_queries_with_its_precision(tokenizer, tmp_path):
    rec = _recommender(tokenizer, precision="int8")
    folder = rec.save(tmp_path / "model")
    assert {ONNX_FILES["fp32"], ONNX_FILES["int8"]} <= {p.name for p in folder.iterdir()}
    # both files are logged with the folder and recorded in its digests
    assert {f"artifact.sha256.{name}" for name in ONNX_FILES.values()} <= set(digest_tags(folder))
    torch_vectors = rec.torch_query_vectors(QUERIES)

    loaded = Recommender.load(folder)
    assert loaded.query_runtime == "onnx-int8" and loaded.query_encoder is not None
    assert loaded.query_encoder.cache.capacity == 16
    assert _cosines(loaded.query_vectors(QUERIES), torch_vectors).min() >= MIN_COSINE["int8"]
    np.testing.assert_allclose(loaded.torch_query_vectors(QUERIES), torch_vectors, atol=1e-6)

    stored = json.loads((folder / "recommender.json").read_text())
    stored["search"]["encoder_precision"] = "fp32"
    (folder / "recommender.json").write_text(json.dumps(stored))
    fp32 = Recommender.load(folder)
    assert fp32.query_runtime == "onnx-fp32"
    np.testing.assert_allclose(fp32.query_vectors(QUERIES), torch_vectors, atol=1e-5)

    forced = Recommender.load(folder, query_encoder="torch")
    assert forced.query_runtime == "torch" and forced.query_encoder is None
    np.testing.assert_allclose(forced.query_vectors(QUERIES), torch_vectors, atol=1e-6)
    with pytest.raises(ValueError, match="query_encoder must be one of"):
        Recommender.load(folder, query_encoder="tensorrt")


def test_a_model_saved_without_exports_or_before_them_loads_and_serves_with_torch(tokenizer, tmp_path):
    rec = _recommender(tokenizer)
    folder = rec.save(tmp_path / "model", export_onnx=False)
    assert not any(p.suffix == ".onnx" for p in folder.iterdir())
    stored = json.loads((folder / "recommender.json").read_text())
    for key in ("encoder_precision", "query_cache_size"):  # as a model saved before these settings
        del stored["search"][key]
    (folder / "recommender.json").write_text(json.dumps(stored))
    loaded = Recommender.load(folder)
    assert loaded.query_runtime == "torch"
    assert loaded.settings.search == replace(rec.settings.search, encoder_precision="int8", query_cache_size=4096)
    np.testing.assert_allclose(loaded.query_vectors(QUERIES), rec.torch_query_vectors(QUERIES), atol=1e-6)
    ids, _ = loaded.search(["item 3"], k=3)
    assert len(ids[0]) == 3


# ---------------------------------------------------------------------------------------------- registration check
def test_the_registration_check_passes_the_models_own_exports(tokenizer, exported):
    result = check_against_torch(exported["folder"], tokenizer, MAX_TOKENS, exported["torch"], QUERIES)
    assert result["ok"] and result["errors"] == [] and result["absent"] == []
    assert result["min_cosine"]["fp32"] >= MIN_COSINE["fp32"]
    assert MIN_COSINE["int8"] <= result["min_cosine"]["int8"] < result["min_cosine"]["fp32"]


def test_the_registration_check_refuses_another_models_export_and_a_damaged_file(tokenizer, exported, tmp_path):
    other = export_query_encoder(_model(tokenizer, seed=1), tokenizer, tmp_path / "other", MAX_TOKENS)
    swapped = tmp_path / "swapped"
    swapped.mkdir()
    (swapped / ONNX_FILES["fp32"]).write_bytes(exported["paths"]["fp32"].read_bytes())
    (swapped / ONNX_FILES["int8"]).write_bytes(other["int8"].read_bytes())  # another model's int8 file
    result = check_against_torch(swapped, tokenizer, MAX_TOKENS, exported["torch"], QUERIES)
    assert not result["ok"] and result["min_cosine"]["fp32"] >= MIN_COSINE["fp32"]
    assert (
        len(result["errors"]) == 1
        and "query_encoder.int8.onnx disagrees with the torch query encoder" in result["errors"][0]
    )

    damaged = onnx_path(swapped, "fp32")
    blob = bytearray(damaged.read_bytes())
    damaged.write_bytes(bytes(blob[: len(blob) // 2]))  # cut short
    result = check_against_torch(swapped, tokenizer, MAX_TOKENS, exported["torch"], QUERIES)
    assert not result["ok"] and any("query_encoder.fp32.onnx does not run" in e for e in result["errors"])


def test_the_registration_check_lets_a_model_without_exports_through(tokenizer, exported, tmp_path):
    result = check_against_torch(tmp_path, tokenizer, MAX_TOKENS, exported["torch"], QUERIES)
    assert result["ok"] and sorted(result["absent"]) == sorted(ONNX_FILES.values())
