"""A trained model in a form that scores without training machinery: evaluation, the pyfunc and serving use it.

Saved as a folder: `encoder/` (the fine-tuned MiniLM and its tokenizer), `query_encoder.fp32.onnx` and
`query_encoder.int8.onnx` (the query tower exported for ONNX Runtime, `ml.search.onnx_encoder`), `heads.pt`
(recency weights, history projection, item bias), `item_embeddings.npy`, `items.parquet` (row -> item id, title,
brand) and `recommender.json` (settings). Scores are dot(query, item) / temperature + item bias, over an
augmented vector so that one inner-product search (`ml.search.dense`) gives the same ranking.

A loaded model encodes search queries with its exported encoder of `settings.search.encoder_precision` when the
folder has it (evaluation, the gate, the pyfunc and serving then measure and serve the same vectors), else with
the torch encoder (a folder saved before the export, or `query_encoder="torch"`); `torch_query_vectors` is
always the torch encoder, the reference the registration check compares the exported files with.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ml.config import QUERY_ENCODERS
from ml.search.engine import SearchSettings
from ml.search.onnx_encoder import QueryEncoder, export_query_encoder, load_query_encoder
from ml.topk import top_k
from ml.training.encoder import load_encoder
from ml.training.model import BiEncoder, build_history_tensors

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecommenderSettings:
    temperature: float
    max_history: int
    max_query_tokens: int
    max_item_tokens: int
    search: SearchSettings = field(default_factory=SearchSettings)  # how the search ranking is served (ml.search)


class Recommender:
    def __init__(
        self,
        model: BiEncoder,
        tokenizer,
        items: pd.DataFrame,
        settings: RecommenderSettings,
        query_encoder: QueryEncoder | None = None,
    ) -> None:
        self.model = model.eval()
        self.query_encoder = query_encoder  # None: search queries go through the torch encoder
        self.tokenizer = tokenizer
        self.items = items.reset_index(drop=True)
        self.settings = settings
        self.item_ids: list[str] = self.items["item_id"].astype(str).tolist()
        self.index_of = {item: i for i, item in enumerate(self.item_ids)}
        self.item_vectors = model.item_table.detach().cpu().numpy().astype(np.float32)
        self.item_bias = model.item_bias.weight.detach().cpu().numpy()[:, 0].astype(np.float32)
        self._search_engine: Any = None  # built on the first search (its BM25 index)

    # ---- vectors -------------------------------------------------------------------------------
    def _history_tensors(self, histories: Sequence[Sequence[str]]) -> dict[str, torch.Tensor]:
        idx = [[self.index_of[i] for i in h if i in self.index_of] for h in histories]
        device = self.model.item_table.device
        return {k: v.to(device) for k, v in build_history_tensors(idx, self.settings.max_history).items()}

    @torch.no_grad()
    def history_vectors(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """One query vector per history (item ids, oldest first); unknown items are ignored."""
        t = self._history_tensors(histories)
        vec = self.model.history_vector(t["hist_idx"], t["hist_pos"], t["hist_mask"])
        return vec.cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def history_scores(self, histories: Sequence[Sequence[str]]) -> np.ndarray:
        """The full score (text part and behavioural part) of every item for each history."""
        t = self._history_tensors(histories)
        q = self.model.history_vector(t["hist_idx"], t["hist_pos"], t["hist_mask"])
        is_search = torch.zeros(len(histories), device=q.device)
        return self.model.logits(q, t["hist_idx"], t["hist_mask"], is_search).cpu().numpy()

    def query_vectors(self, queries: Sequence[str]) -> np.ndarray:
        """[n, D] search-query vectors: the exported encoder (and its cache) when loaded, else torch."""
        if self.query_encoder is not None:
            return self.query_encoder.encode(list(queries))
        return self.torch_query_vectors(queries)

    @torch.no_grad()
    def torch_query_vectors(self, queries: Sequence[str]) -> np.ndarray:
        """[n, D] search-query vectors from the torch model (`BiEncoder.encode_texts`)."""
        return self.model.encode_texts(self.tokenizer, list(queries), self.settings.max_query_tokens).numpy()

    @property
    def query_runtime(self) -> str:
        """What encodes search queries: "onnx-int8", "onnx-fp32" or "torch"."""
        return f"onnx-{self.query_encoder.precision}" if self.query_encoder is not None else "torch"

    def augmented_items(self) -> np.ndarray:
        """Item vectors with the bias appended: inner product with `augmented_queries` = the score."""
        return np.hstack([self.item_vectors, self.item_bias[:, None]]).astype(np.float32)

    def augmented_queries(self, vectors: np.ndarray) -> np.ndarray:
        return np.hstack([vectors / self.settings.temperature, np.ones((len(vectors), 1))]).astype(np.float32)

    # ---- scores --------------------------------------------------------------------------------
    def scores(self, vectors: np.ndarray) -> np.ndarray:
        return self.augmented_queries(vectors) @ self.augmented_items().T

    def _top(self, s: np.ndarray, k: int) -> tuple[list[list[str]], np.ndarray]:
        top = top_k(s, k)  # equal scores: the lower item index first, on every CPU
        return [[self.item_ids[j] for j in row] for row in top], np.take_along_axis(s, top, axis=1)

    def recommend(
        self, histories: Sequence[Sequence[str]], k: int, batch: int = 256
    ) -> tuple[list[list[str]], np.ndarray]:
        """Top-k by the full score; an empty history gets the items the model ranks best on its own."""
        ids: list[list[str]] = []
        scores = []
        for start in range(0, len(histories), batch):
            got, sc = self._top(self.history_scores(histories[start : start + batch]), k)
            ids.extend(got)
            scores.append(sc)
        return ids, (np.vstack(scores) if scores else np.zeros((0, k)))

    def search(
        self, queries: Sequence[str], k: int, histories: Sequence[Sequence[str]] | None = None
    ) -> tuple[list[list[str]], list[np.ndarray]]:
        """The served search ranking (`ml.search.engine`: the query tower, blended with the shopper's history when
        given, fused with BM25), top-k item ids and fused scores per query."""
        from ml.search.engine import SearchEngine, served_search

        if self._search_engine is None:
            self._search_engine = SearchEngine.for_items(self.items, self.settings.search)
        histories = histories if histories is not None else [[] for _ in queries]
        return served_search(self, queries, histories, k, engine=self._search_engine)

    # ---- persistence ---------------------------------------------------------------------------
    def save(self, folder: Path, export_onnx: bool = True) -> Path:
        """Write the model folder; `export_onnx` False leaves out the exported query encoders (the model then
        serves queries with torch)."""
        folder.mkdir(parents=True, exist_ok=True)
        self.model.bert.save_pretrained(folder / "encoder")
        self.tokenizer.save_pretrained(folder / "encoder")
        if export_onnx:
            export_query_encoder(self.model, self.tokenizer, folder, self.settings.max_query_tokens)
        heads = {k: v for k, v in self.model.state_dict().items() if not k.startswith("bert.")}
        torch.save(heads, folder / "heads.pt")
        np.save(folder / "item_embeddings.npy", self.item_vectors)
        self.items[["item_id", "title", "brand", "category"]].to_parquet(folder / "items.parquet", index=False)
        (folder / "recommender.json").write_text(json.dumps(asdict(self.settings), indent=2))
        return folder

    @classmethod
    def load(cls, folder: Path, device: str = "cpu", query_encoder: str = "onnx") -> Recommender:
        """`query_encoder` "onnx": search queries go through the folder's exported encoder of the model's
        `encoder_precision` when it has one, else torch; "torch": always torch."""
        if query_encoder not in QUERY_ENCODERS:
            raise ValueError(f"query_encoder must be one of {QUERY_ENCODERS}, got {query_encoder!r}")
        folder = Path(folder)
        stored = json.loads((folder / "recommender.json").read_text())
        # a model saved before `stem_plurals` existed was measured without it, and is served so
        stored_search = {"stem_plurals": False, **stored.get("search", {})}
        settings = RecommenderSettings(**{**stored, "search": SearchSettings(**stored_search)})
        items = pd.read_parquet(folder / "items.parquet")
        bert, tokenizer = load_encoder(folder / "encoder")
        heads = torch.load(folder / "heads.pt", map_location=device, weights_only=True)
        model = BiEncoder(
            bert,
            n_items=len(items),
            trainable_layers=0,
            max_history=settings.max_history,
            temperature=settings.temperature,
            item_category=heads["item_category"],
            item_brand=heads["item_brand"],
        )
        missing = model.load_state_dict(heads, strict=False)
        unexpected = [k for k in missing.unexpected_keys]
        lacking = [k for k in missing.missing_keys if not k.startswith("bert.")]
        if unexpected or lacking:
            raise ValueError(f"{folder}/heads.pt does not match the model: missing {lacking}, unexpected {unexpected}")
        encoder = None
        if query_encoder == "onnx":
            search = settings.search
            encoder = load_query_encoder(
                folder, tokenizer, settings.max_query_tokens, search.encoder_precision, search.query_cache_size
            )
        return cls(model.to(device), tokenizer, items, settings, query_encoder=encoder)
