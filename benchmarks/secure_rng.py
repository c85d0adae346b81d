"""What drawing DP randomness from the OS CSPRNG (dp.secure_rng, ml.privacy.noise) costs, against the seeded
generators the local profile uses.

Three measurements, each with secure_rng off then on:
1. the transition counts' release (`release_counts`, Gaussian noise on each pair that occurs) at
   amazon2018-industrial's catalogue size (3,686 items) and at a larger one, 50,000 shoppers of 8 pairs;
2. DP-SGD training steps (`train_bi_encoder`, frozen encoder, dense heads training, 3,686 items, 2,000
   shoppers, batch 256): the noise on each trainable parameter and the Poisson sample, per step;
3. the raw cost of one noise value, for sizing a run with trained encoder layers (MiniLM's 22.7M parameters).

Writes benchmarks/results/secure-rng.json and .md. Run: `PYTHONPATH=. python benchmarks/secure_rng.py`.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine, write  # noqa: E402

from ml.privacy.noise import SecureRandom  # noqa: E402
from ml.privacy.pair_counts import release_counts  # noqa: E402

INDUSTRIAL_ITEMS = 3686
MINILM_PARAMS = 22_713_216


def _best_of(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def count_release(n_items: int, repeats: int, shoppers: int = 50_000) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    draws = rng.integers(0, n_items, size=(shoppers, 8, 2)).tolist()
    pairs = [list(dict.fromkeys((a, b) for a, b in user)) for user in draws]
    keep_all = -1e9  # a threshold every noised count clears: every pair that occurs is noised and kept

    def release(noise: Any) -> Any:
        return release_counts(pairs, n_items, 8, 1.0, noise, threshold=keep_all)

    seeded = _best_of(lambda: release(np.random.default_rng(1)), repeats)
    secure = _best_of(lambda: release(SecureRandom()), repeats)
    return {
        "n_items": n_items,
        "pairs": len(release(np.random.default_rng(1)).keys),
        "seconds_seeded": round(seeded, 3),
        "seconds_secure": round(secure, 3),
        "ratio": round(secure / seeded, 2),
    }


def dp_sgd_steps(steps: int) -> dict[str, Any]:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from ml.training.dp_sgd import DPSettings
    from ml.training.encoder import model_dir
    from ml.training.examples import Examples
    from ml.training.model import BiEncoder
    from ml.training.train import train_bi_encoder

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir()), local_files_only=True)
    n_items, n_users = INDUSTRIAL_ITEMS, 2000
    rng = np.random.default_rng(0)
    users = [f"u{u}" for u in range(n_users) for _ in range(3)]
    histories = [rng.integers(0, n_items, size=5).tolist() for _ in users]
    examples = Examples(users, histories, [None] * len(users), rng.integers(0, n_items, size=len(users)).tolist())
    texts = [f"item {i}" for i in range(n_items)]
    out: dict[str, Any] = {"n_items": n_items, "n_users": n_users, "batch_size": 256, "steps": steps}
    for secure in (False, True):
        torch.manual_seed(0)
        bert = BertModel(
            BertConfig(
                vocab_size=tokenizer.vocab_size,
                hidden_size=384,
                num_hidden_layers=1,
                num_attention_heads=6,
                intermediate_size=1536,
                max_position_embeddings=64,
            ),
            add_pooling_layer=False,
        )
        model = BiEncoder(
            bert,
            n_items=n_items,
            trainable_layers=0,
            max_history=10,
            item_category=torch.arange(n_items) % 40,
            item_brand=torch.arange(n_items) % 300,
        )
        with torch.no_grad():
            model.item_table.copy_(torch.nn.functional.normalize(torch.randn(n_items, 384), dim=1))
        out["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
        result = train_bi_encoder(
            model,
            tokenizer,
            examples,
            texts,
            epochs=100,
            max_steps=steps,
            batch_size=256,
            learning_rate=0.2,
            max_history=10,
            max_query_tokens=8,
            max_item_tokens=8,
            seed=7,
            dp=DPSettings(noise_multiplier=1.0, delta=1e-4, max_grad_norm=1.0, secure_rng=secure),
        )
        out["seconds_per_step_" + ("secure" if secure else "seeded")] = round(result.seconds_per_step, 4)
    out["ratio"] = round(out["seconds_per_step_secure"] / out["seconds_per_step_seeded"], 2)
    return out


def per_value(n: int, repeats: int) -> dict[str, Any]:
    seeded = _best_of(lambda: torch.normal(0.0, 1.0, size=(n,)), repeats)
    secure = _best_of(lambda: SecureRandom().standard_normal(n, dtype=np.float32), repeats)
    return {
        "values": n,
        "ns_per_value_seeded": round(seeded / n * 1e9, 2),
        "ns_per_value_secure": round(secure / n * 1e9, 2),
        "minilm_step_noise_seconds_secure": round(secure / n * MINILM_PARAMS, 3),
        "minilm_step_noise_seconds_seeded": round(seeded / n * MINILM_PARAMS, 3),
    }


def markdown(data: dict[str, Any]) -> str:
    m = data["machine"]
    lines = [
        "# Secure DP randomness (dp.secure_rng): its cost",
        "",
        f"{m['date']}, {m['cpu']}, {m['cores']} cores, torch {m['versions']['torch']}, "
        f"opacus {m['versions']['opacus']}; `benchmarks/secure_rng.py`. Seeded = numpy's PCG64 (counts) or "
        "torch's generator (DP-SGD), as in the local profile; secure = os.urandom, four Gaussians a value "
        "(ml.privacy.noise), as in the prod profile. Best of the repeats; the machine is shared, so "
        "ratios are the figure to read.",
        "",
        "## Transition counts release (`release_counts`, noise on each pair that occurs)",
        "",
        "| items | noised pairs | seeded s | secure s | ratio |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['n_items']:,} | {r['pairs']:,} | {r['seconds_seeded']} | {r['seconds_secure']} | {r['ratio']}x |"
        for r in data["counts"]
    ]
    s = data["dp_sgd"]
    lines += [
        "",
        "## DP-SGD steps (`train_bi_encoder`, frozen encoder)",
        "",
        f"{s['trainable_params']:,} trainable parameters, {s['n_items']:,} items, {s['n_users']:,} shoppers, "
        f"batch {s['batch_size']}, {s['steps']} steps.",
        "",
        "| seeded s/step | secure s/step | ratio |",
        "|---|---|---|",
        f"| {s['seconds_per_step_seeded']} | {s['seconds_per_step_secure']} | {s['ratio']}x |",
        "",
        "## One noise value",
        "",
        "| seeded ns | secure ns | noise of one step over MiniLM's 22.7M parameters, seeded / secure s |",
        "|---|---|---|",
    ]
    v = data["per_value"]
    lines.append(
        f"| {v['ns_per_value_seeded']} | {v['ns_per_value_secure']} | "
        f"{v['minilm_step_noise_seconds_seeded']} / {v['minilm_step_noise_seconds_secure']} |"
    )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, nargs="*", default=[INDUSTRIAL_ITEMS, 8000])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    data = {
        "machine": machine(),
        "counts": [count_release(n, args.repeats) for n in args.items],
        "dp_sgd": dp_sgd_steps(args.steps),
        "per_value": per_value(4_000_000, args.repeats),
    }
    write("secure-rng", data, markdown(data))
    print(markdown(data))


if __name__ == "__main__":
    main()
