"""Time per DP-SGD training step against the size of the catalogue: sampled negatives keep it flat.

    python benchmarks/train_steps.py [--items 20000,100000,200000] [--steps 6]

The train stage's step, without the rest of the chain: the bi-encoder (`ml.training.model.BiEncoder`) with a frozen
encoder, a random unit item table of MiniLM's width, sparse item x item tables of the density the chain gives
(released transition pairs, `LEXICAL_PER_ITEM` BM25 neighbours per item), and a step of 256 shoppers x 8 examples
(2,048 example slots: the default `SLOTS_PER_STEP`) through `ml.training.train.train_bi_encoder` with DP-SGD (Opacus,
ghost clipping). Each size trains with the default `negatives` (a uniform sample of 4,096 items a step) and, at
the smallest size, with every item scored (`negatives` 0) for comparison.
Writes benchmarks/results/train-steps.json and .md.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write  # noqa: E402

SHOPPERS_PER_STEP, EXAMPLES_PER_SHOPPER, HISTORY = 256, 8, 10
TRANSITIONS_PER_ITEM = 10  # released pairs per item: an upper end of what the chain releases (pipeline.md)
LEXICAL_PER_ITEM = 100  # ml.item_tables.TOP_N, before symmetrizing
N_SHOPPERS = 20_000


def _table(n: int, per_row: int, rng: np.random.Generator):
    from scipy import sparse

    rows = np.repeat(np.arange(n), per_row)
    return sparse.csr_matrix(
        (rng.random(n * per_row, dtype=np.float32), (rows, rng.integers(0, n, n * per_row))), shape=(n, n)
    )


def one(n_items: int, negatives: int, steps: int, seed: int = 0) -> dict:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from ml.training.dp_sgd import DPSettings
    from ml.training.encoder import model_dir
    from ml.training.examples import Examples
    from ml.training.model import BiEncoder
    from ml.training.train import train_bi_encoder

    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)
    bert = BertModel(
        BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=384, num_hidden_layers=1, num_attention_heads=4),
        add_pooling_layer=False,
    )
    model = BiEncoder(
        bert,
        n_items=n_items,
        trainable_layers=0,
        max_history=HISTORY,
        item_category=torch.as_tensor(rng.integers(0, 30, n_items)),
        item_brand=torch.as_tensor(rng.integers(0, 2000, n_items)),
    )
    vectors = rng.normal(size=(n_items, 384)).astype(np.float32)
    model.item_table.copy_(torch.from_numpy(vectors / np.linalg.norm(vectors, axis=1, keepdims=True)))
    model.set_transitions(_table(n_items, TRANSITIONS_PER_ITEM, rng))
    model.set_lexical(_table(n_items, LEXICAL_PER_ITEM, rng))
    model.freeze_dense_heads()  # as DP-SGD trains a catalogue this size (ml.training.dp_regime)
    users = [f"u{u}" for u in range(N_SHOPPERS) for _ in range(EXAMPLES_PER_SHOPPER)]
    histories = [[int(i) for i in rng.integers(0, n_items, HISTORY)] for _ in users]
    examples = Examples(users, histories, [None] * len(users), [int(t) for t in rng.integers(0, n_items, len(users))])
    started = time.perf_counter()
    result = train_bi_encoder(
        model,
        tokenizer,
        examples,
        [""] * n_items,
        epochs=1,
        max_steps=steps,
        batch_size=SHOPPERS_PER_STEP,
        learning_rate=0.01,
        max_history=HISTORY,
        max_query_tokens=8,
        max_item_tokens=8,
        seed=seed,
        dp=DPSettings(noise_multiplier=1.0, delta=1e-5, max_grad_norm=1.0),
        examples_per_user=EXAMPLES_PER_SHOPPER,
        negatives=negatives,
    )
    return {
        "n_items": n_items,
        "negatives": negatives,
        "steps": result.steps,
        "seconds_per_step": result.seconds_per_step,
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def markdown(results: dict) -> str:
    m = results["machine"]
    lines = [
        f"# Training step against catalogue size ({m['date']}, {m['cores']} cores, {m['memory_gb']} GB)",
        "",
        __doc__.split("\n\n")[2].replace("\n", " "),
        "",
        f"Load average at the start: {results['load_average']}. Each size runs in its own process, one after the "
        "other; peak RSS is that process's.",
        "",
        "| items | negatives a step | steps | s/step | peak RSS (MB) |",
        "|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        sampled = f"{r['negatives']:,} sampled" if 0 < r["negatives"] < r["n_items"] else "every item"
        lines.append(
            f"| {r['n_items']:,} | {sampled} | {r['steps']} | {r['seconds_per_step']:.2f} | {r['peak_rss_mb']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    import json
    import os
    import subprocess

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="20000,100000,200000")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--one", default="", help=argparse.SUPPRESS)  # n_items,negatives: run in this process
    args = parser.parse_args()
    if args.one:
        n_items, negatives = (int(x) for x in args.one.split(","))
        print(json.dumps(one(n_items, negatives, args.steps)))
        return
    load = os.getloadavg()
    sizes = [int(x) for x in args.items.split(",")]
    plan = [(sizes[0], 0)] + [(n, 4096) for n in sizes]
    runs = []
    for n_items, negatives in plan:  # one process each: a size's peak memory is its own
        out = subprocess.run(
            [sys.executable, __file__, "--one", f"{n_items},{negatives}", "--steps", str(args.steps)],
            capture_output=True,
            text=True,
            check=True,
        )
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(runs[-1], flush=True)
    results = {"machine": machine(), "load_average": [round(x, 2) for x in load], "runs": runs}
    write("train-steps", results, markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
