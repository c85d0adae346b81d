"""The registration check of the exported query encoder, through the real smoke test: a registered version whose
int8 file is not its model's encoder (another model's export, registered with its digests, so integrity passes)
fails the smoke test with the file named; the same model with its own exports passes, and says which encoder
its pyfunc serves search queries with.

A small random BERT (the MiniLM tokenizer) keeps the export and the fresh process quick.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel

from ml.config import Settings
from ml.search.onnx_encoder import ONNX_FILES, export_query_encoder
from ml.training.encoder import load_encoder
from ml.training.model import BiEncoder
from ml.training.recommender import Recommender, RecommenderSettings

N_ITEMS = 12


def _model(seed: int) -> tuple[BiEncoder, object]:
    _, tokenizer = load_encoder()
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
    return BiEncoder(bert, n_items=N_ITEMS, trainable_layers=0, max_history=4), tokenizer


def _save(folder: Path, seed: int) -> Path:
    model, tokenizer = _model(seed)
    items = pd.DataFrame(
        {
            "item_id": [f"i{j:02d}" for j in range(N_ITEMS)],
            "title": [f"{['red', 'blue', 'green'][j % 3]} item {j}" for j in range(N_ITEMS)],
            "brand": [f"b{j % 4}" for j in range(N_ITEMS)],
            "category": ["c"] * N_ITEMS,
        }
    )
    with torch.no_grad():
        model.item_table.copy_(model.encode_texts(tokenizer, items["title"].tolist(), 16))
    return Recommender(model, tokenizer, items, RecommenderSettings(0.05, 4, 16, 16)).save(folder)


def _register(settings: Settings, folder: Path) -> str:
    import mlflow

    from ml.registry import registration as reg
    from ml.registry.integrity import digest_tags
    from ml.registry.pyfunc import input_example
    from ml.registry.tracking import client, configure

    experiment = configure(settings)
    with mlflow.start_run(experiment_id=experiment) as run:
        uri = reg.log_model(folder, input_example([["i00", "i01"]], "red item"))
    version = reg.register(
        client(settings), settings.model_name, uri, run.info.run_id, digest_tags(folder), description="test card"
    )
    return str(version.version)


@pytest.mark.slow
def test_the_smoke_test_fails_a_version_whose_exported_encoder_is_not_its_models(vetted_home, tmp_path):
    from ml.registry.smoke import smoke_test

    settings = Settings.from_env()
    good = _save(tmp_path / "good", seed=0)
    swapped = tmp_path / "swapped"
    shutil.copytree(good, swapped)
    other = export_query_encoder(*_model(seed=1), tmp_path / "other", 16)
    shutil.copy(other["int8"], swapped / ONNX_FILES["int8"])  # recorded in the digests: integrity passes

    bad_version = _register(settings, swapped)
    smoke = smoke_test(
        settings.tracking_uri, f"models:/{settings.model_name}/{bad_version}", [["i00"]], ["red item"], k=3
    )
    assert smoke["ok"] is False and smoke["integrity"] == "verified", smoke
    assert "query encoder check failed" in smoke["error"] and ONNX_FILES["int8"] in smoke["error"]
    assert smoke["encoders"]["min_cosine"]["fp32"] > 0.9999  # the untouched file still agrees

    good_version = _register(settings, good)
    smoke = smoke_test(
        settings.tracking_uri, f"models:/{settings.model_name}/{good_version}", [["i00"]], ["red item"], k=3
    )
    assert smoke["ok"] is True and smoke["encoders"]["ok"], smoke
    assert smoke["query_encoder"] == "onnx-int8" and smoke["requests"] == 2
