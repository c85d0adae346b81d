"""A trained model in a form that scores without training machinery: evaluation, the pyfunc and serving use it.

Saved as a folder: `encoder/` (the fine-tuned MiniLM and its tokenizer), `heads.pt` (recency weights,
history projection, item bias), `item_embeddings.npy`, `items.parquet` (row -> item id, title, brand)
and `recommender.json` (settings). Scores are dot(query, item) / temperature + item bias, over an
augmented vector so that one inner-product search (FAISS) gives the same ranking.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ml.training.encoder import load_encoder
from ml.training.model import BiEncoder, build_history_tensors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecommenderSettings:
    temperature: float
    max_history: int
    max_query_tokens: int
    max_item_tokens: int


class Recommender:
    def __init__(self, model: BiEncoder, tokenizer, items: pd.DataFrame, settings: RecommenderSettings) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.items = items.reset_index(drop=True)
        self.settings = settings
        self.item_ids: list[str] = self.items["item_id"].astype(str).tolist()
        self.index_of = {item: i for i, item in enumerate(self.item_ids)}
        self.item_vectors = model.item_table.detach().cpu().numpy().astype(np.float32)
        self.item_bias = model.item_bias.weight.detach().cpu().numpy()[:, 0].astype(np.float32)

    # ---- vectors -------------------------------------------------------------------------------
    @torch.no_grad()
    def history_vectors(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """One query vector per history (item ids, oldest first); unknown items are ignored."""
        idx = [[self.index_of[i] for i in h if i in self.index_of] for h in histories]
        tensors = build_history_tensors(idx, self.settings.max_history)
        device = self.model.item_table.device
        vec = self.model.history_vector(*(tensors[k].to(device) for k in ("hist_idx", "hist_pos", "hist_mask")))
        return vec.cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def query_vectors(self, queries: Sequence[str]) -> np.ndarray:
        return self.model.encode_texts(self.tokenizer, list(queries), self.settings.max_query_tokens).numpy()

    def augmented_items(self) -> np.ndarray:
        """Item vectors with the bias appended: inner product with `augmented_queries` = the score."""
        return np.hstack([self.item_vectors, self.item_bias[:, None]]).astype(np.float32)

    def augmented_queries(self, vectors: np.ndarray) -> np.ndarray:
        return np.hstack([vectors / self.settings.temperature, np.ones((len(vectors), 1))]).astype(np.float32)

    # ---- scores --------------------------------------------------------------------------------
    def scores(self, vectors: np.ndarray) -> np.ndarray:
        return self.augmented_queries(vectors) @ self.augmented_items().T

    def top_k(self, vectors: np.ndarray, k: int, batch: int = 1024) -> tuple[list[list[str]], np.ndarray]:
        ids, all_scores = [], []
        items = self.augmented_items()
        for start in range(0, len(vectors), batch):
            s = self.augmented_queries(vectors[start:start + batch]) @ items.T
            top = np.argpartition(-s, min(k, s.shape[1] - 1), axis=1)[:, :k]
            order = np.take_along_axis(s, top, axis=1).argsort(axis=1)[:, ::-1]
            top = np.take_along_axis(top, order, axis=1)
            ids.extend([[self.item_ids[j] for j in row] for row in top])
            all_scores.append(np.take_along_axis(s, top, axis=1))
        return ids, (np.vstack(all_scores) if all_scores else np.zeros((0, k)))

    def recommend(self, histories: Sequence[Sequence[str]], k: int) -> tuple[list[list[str]], np.ndarray]:
        return self.top_k(self.history_vectors(histories), k)

    def search(self, queries: Sequence[str], k: int) -> tuple[list[list[str]], np.ndarray]:
        return self.top_k(self.query_vectors(queries), k)

    # ---- persistence ---------------------------------------------------------------------------
    def save(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        self.model.bert.save_pretrained(folder / "encoder")
        self.tokenizer.save_pretrained(folder / "encoder")
        heads = {k: v for k, v in self.model.state_dict().items() if not k.startswith("bert.")}
        torch.save(heads, folder / "heads.pt")
        np.save(folder / "item_embeddings.npy", self.item_vectors)
        self.items[["item_id", "title", "brand", "category"]].to_parquet(folder / "items.parquet", index=False)
        (folder / "recommender.json").write_text(json.dumps(asdict(self.settings), indent=2))
        return folder

    @classmethod
    def load(cls, folder: Path, device: str = "cpu") -> Recommender:
        folder = Path(folder)
        settings = RecommenderSettings(**json.loads((folder / "recommender.json").read_text()))
        items = pd.read_parquet(folder / "items.parquet")
        bert, tokenizer = load_encoder(folder / "encoder")
        model = BiEncoder(bert, n_items=len(items), trainable_layers=0, max_history=settings.max_history,
                          temperature=settings.temperature)
        heads = torch.load(folder / "heads.pt", map_location=device, weights_only=True)
        missing = model.load_state_dict(heads, strict=False)
        unexpected = [k for k in missing.unexpected_keys]
        lacking = [k for k in missing.missing_keys if not k.startswith("bert.")]
        if unexpected or lacking:
            raise ValueError(f"{folder}/heads.pt does not match the model: missing {lacking}, unexpected {unexpected}")
        return cls(model.to(device), tokenizer, items, settings)
