"""The serving benchmark's world: a servable model over random item vectors, a Feast store of shoppers' histories,
and the service started on loopback (`benchmarks/serving.py` drives it).

`build_world` builds a model WITHOUT training: the pretrained MiniLM (frozen) with RANDOM UNIT VECTORS as item
embeddings and small random item biases (the cost of the full score depends on the number and size of vectors,
not on their values; random titles too), registers and promotes it in a temporary MLflow, and fills a real Feast
online store (SQLite) with the recent items of `N_SHOPPERS` shoppers. `start_server` runs `ml.serving.app.serve`
(uvicorn) in a subprocess on 127.0.0.1 with the query encoder asked for.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

API_KEY = "benchmark-api-key-0123456789abcdef"
PSEUDONYM_KEY = "benchmark-pseudonym-key-0123456789abcdef"
N_SHOPPERS = 2000
HISTORY = 8
K = 10
# shared brand, repeat, same category, same brand, item transition, closest history item, lexical
# (BiEncoder's order; a model with fewer features takes the first ones)
FEATURE_WEIGHTS = [0.5, -1.0, 0.3, 0.3, 0.5, 1.0, 0.5]


def build_world(home: Path, n_items: int, seed: int, bert_and_tokenizer: Any) -> dict[str, Any]:
    """A promoted model over `n_items` random unit vectors, and a Feast store with shoppers' histories."""
    import mlflow
    import pandas as pd
    import torch

    from ml.config import Settings
    from ml.features import store as fs
    from ml.features.build import write_feature_tables
    from ml.privacy.pseudonymize import Pseudonymizer
    from ml.registry import registration as reg
    from ml.registry.integrity import digest_tags
    from ml.registry.pyfunc import input_example
    from ml.registry.tracking import client, configure
    from ml.training.model import BiEncoder
    from ml.training.recommender import Recommender, RecommenderSettings

    rng = np.random.default_rng(seed)
    settings = Settings(
        home=home,
        tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
        artifact_root=(home / "mlartifacts").as_uri(),
    )
    words = [
        "red",
        "blue",
        "green",
        "steel",
        "wool",
        "ceramic",
        "shoe",
        "mug",
        "lamp",
        "jacket",
        "kettle",
        "desk",
    ]
    n_brands = max(10, n_items // 50)
    brand_of = np.minimum((rng.pareto(1.2, size=n_items) * 3).astype(int), n_brands - 1)  # a long tail
    items = pd.DataFrame(
        {
            "item_id": [f"it{i:06d}" for i in range(n_items)],
            "title": [f"{words[i % 12]} {words[(i // 12) % 12]} item {i}" for i in range(n_items)],
            "description": [""] * n_items,
            "brand": [f"brand{b:04d}" for b in brand_of],
            "category": [f"cat{i % 40}" for i in range(n_items)],
            "price": [1.0] * n_items,
        }
    )
    bert, tokenizer = bert_and_tokenizer
    model = BiEncoder(bert, n_items=n_items, trainable_layers=0, max_history=HISTORY)
    vectors = rng.normal(size=(n_items, model.dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    with torch.no_grad():
        model.item_table.copy_(torch.from_numpy(vectors))
        model.item_bias.weight.copy_(torch.from_numpy(rng.normal(0, 0.1, size=(n_items, 1)).astype(np.float32)))
        # non-zero behavioural weights, as a trained model has (zeros would let the service skip the
        # closest-history-item similarity, the costliest part of the score)
        weights = torch.tensor(FEATURE_WEIGHTS[: model.feature_weights.weight.numel()])
        model.feature_weights.weight.copy_(weights)
    rec_settings = RecommenderSettings(temperature=0.05, max_history=HISTORY, max_query_tokens=32, max_item_tokens=48)
    folder = Recommender(model, tokenizer, items, rec_settings).save(home / "model")

    experiment = configure(settings)
    with mlflow.start_run(experiment_id=experiment) as run:
        uri = reg.log_model(folder, input_example([list(items["item_id"][:3])], "red shoe"))
    c = client(settings)
    tags = {"gate.status": "passed", **digest_tags(folder)}  # serving verifies the files against them
    version = reg.register(c, settings.model_name, uri, run.info.run_id, tags, "benchmark")
    reg.promote(c, settings.model_name, version.version, actor="benchmark")

    pseudo = Pseudonymizer(PSEUDONYM_KEY.encode())
    start = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=2)
    shoppers = [f"shopper{u}" for u in range(N_SHOPPERS)]
    rows = []
    for u, raw in enumerate(shoppers):
        p = pseudo.pseudonym(raw)
        for j, item in enumerate(rng.integers(0, n_items, size=HISTORY)):
            rows.append(
                {
                    "event_id": f"e{u}-{j}",
                    "user_id": p,
                    "item_id": f"it{item:06d}",
                    "event_type": "click",
                    "query": None,
                    "ts": start + pd.Timedelta(seconds=u * 10 + j),
                }
            )
    now = datetime.now(UTC)
    write_feature_tables(home / "features", items, pd.DataFrame(rows), HISTORY, pd.Timestamp(now))
    store = fs.open_store(fs.repo_config(settings.feast_dir, settings.profile))
    fs.apply_definitions(store, home / "features")
    fs.materialize(store, now)
    return {
        "settings": settings,
        "folder": folder,
        "shoppers": shoppers,
        "vectors": vectors,
        "version": version.version,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path, port: int, log_path: Path, workers: int = 1, encoder: str = "onnx") -> subprocess.Popen:
    env = {
        "VETTED_QUERY_ENCODER": encoder,
        **os.environ,
        "VETTED_HOME": str(home),
        "VETTED_API_KEY": API_KEY,
        "VETTED_PSEUDONYM_KEY": PSEUDONYM_KEY,
        "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
        "VETTED_DEMO": "",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
        "TOKENIZERS_PARALLELISM": "false",
    }
    code = (
        "import logging; logging.basicConfig(level=logging.INFO); "
        "from ml.config import Settings; from ml.serving.app import serve; "
        f"serve(Settings.from_env(), host='127.0.0.1', port={port}, workers={workers})"
    )
    with log_path.open("w") as fh:
        return subprocess.Popen(
            [sys.executable, "-c", code], env=env, cwd=str(REPO), stdout=fh, stderr=subprocess.STDOUT
        )


def wait_healthy(port: int, proc: subprocess.Popen, timeout: float, log_path: Path, workers: int = 1) -> float:
    """Seconds until /healthz answers 200 and every worker has started. With several workers, the first
    to answer is not enough: the clients' keep-alive connections opened before the others start would
    all go to it (seen: all 16 to one of two workers)."""
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proc.poll() is not None:
            raise RuntimeError(
                f"the server exited with {proc.returncode}; see {log_path}:\n"
                + "\n".join(log_path.read_text().splitlines()[-15:])
            )
        try:
            healthy = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            healthy = False
        if healthy and log_path.read_text().count("Application startup complete") >= workers:
            return time.monotonic() - start
        time.sleep(0.5)
    raise RuntimeError(f"the server was not healthy within {timeout:.0f} s; see {log_path}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
