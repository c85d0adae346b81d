"""The training loop: device auto (CUDA with bf16 autocast, else CPU), DP-SGD with Opacus or not.

The training set is indexed by shopper: item u of the dataset is up to `examples_per_user` examples drawn
from shopper u's examples. With DP on, Opacus' Poisson sampler picks shoppers, and ghost clipping bounds
each sampled shopper's gradient, the gradient of the mean loss over that shopper's examples (the model
takes them as one grouped row, `BiEncoder.forward`): the (epsilon, delta) it reports is user-level, and a
shopper's whole gradient is clipped once instead of one of its examples standing for it. Without DP the
same dataset is shuffled and the loss is the same, so the two runs differ only in privacy.

The batches and their loss live in `ml.training.batches`; DP-SGD's settings, the record of a DP run and the
secure noise source in `ml.training.dp_sgd`.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from ml.privacy.noise import SECURE_SOURCE
from ml.training.batches import IGNORE, make_collate, per_user_loss
from ml.training.dp_sgd import DPInfo, DPSettings, use_secure_noise
from ml.training.examples import Examples
from ml.training.model import BiEncoder
from ml.training.negatives import NegativeSampler, sampled_targets, use_sampling
from ml.training.sampling import (
    PerUserDataset,
    SecurePoissonBatches,
    average_gradients,
    shard_loader,
    zero_gradients,
)

if TYPE_CHECKING:  # Opacus is imported only when DP is on (serving does not need it)
    from opacus.grad_sample import AbstractGradSampleModule
    from opacus.optimizers import DPOptimizer

log = logging.getLogger(__name__)


def pick_device(prefer: str = "auto") -> torch.device:
    if prefer == "cpu":
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass
class TrainResult:
    steps: int
    epochs: float
    device: str
    seconds: float
    seconds_per_step: float
    final_loss: float
    epoch_metrics: list[dict[str, float]] = field(default_factory=list)
    dp: DPInfo | None = None
    world_size: int = 1


def planned_steps(n_users: int, batch_size: int, epochs: int, max_steps: int) -> tuple[int, float]:
    """Steps to run and the sample rate (1 / steps per epoch, exactly what Opacus' Poisson sampler uses)."""
    per_epoch = max(1, math.ceil(max(1, n_users) / batch_size))
    return min(max_steps, epochs * per_epoch), 1.0 / per_epoch


# the small behavioural heads start at zero and need larger steps than the pretrained encoder
HEAD_LR_FACTOR = 50.0
ENCODER_LR_FACTOR = 0.05
HEADS = ("item_bias", "category_transition", "feature_weights", "recency")
# the log content scale multiplies every text score: at the heads' rate under DP it ran off to 0 (measured)
SCALAR_LR_FACTOR = 5.0
SCALARS = ("content_scale",)


def parameter_groups(model: BiEncoder, learning_rate: float) -> list[dict]:
    """Optimizer groups: behavioural heads fast, the content scale at a tenth of that, the history projection
    at the base rate, the encoder slow."""
    groups: dict[str, list[torch.nn.Parameter]] = {"heads": [], "scalars": [], "projection": [], "encoder": []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        top = name.split(".")[0]
        key = (
            "encoder"
            if name.startswith("bert.")
            else "heads"
            if top in HEADS
            else "scalars"
            if top in SCALARS
            else "projection"
        )
        groups[key].append(p)
    factor = {"heads": HEAD_LR_FACTOR, "scalars": SCALAR_LR_FACTOR, "projection": 1.0, "encoder": ENCODER_LR_FACTOR}
    return [{"params": ps, "lr": learning_rate * factor[k], "name": k} for k, ps in groups.items() if ps]


def refresh_item_table(
    model: BiEncoder, tokenizer: PreTrainedTokenizerBase, item_texts: Sequence[str], max_item_tokens: int
) -> None:
    table = model.encode_texts(tokenizer, item_texts, max_item_tokens)
    model.item_table.copy_(table.to(model.item_table.device))


PROGRESS_SECONDS = 30.0  # at most this long between two progress lines of a training run


class _Progress:
    """When to log a progress line (every `every` steps, at most PROGRESS_SECONDS apart, the last step) and its text."""

    def __init__(self, steps: int, every: int) -> None:
        self.steps, self.every = steps, every
        self.started = self.last = time.perf_counter()

    def due(self, step: int) -> bool:
        return step in (1, self.steps) or step % self.every == 0 or time.perf_counter() - self.last >= PROGRESS_SECONDS

    def report(self, step: int, loss: float | None, epsilon: float | None) -> None:
        now = time.perf_counter()
        self.last = now
        per_step = (now - self.started) / step
        log.info(
            "train step %d/%d (%.0f%%): loss %s, DP-SGD epsilon spent %s, %.2f s/step, about %.0f s left",
            step,
            self.steps,
            100 * step / self.steps,
            "-" if loss is None else f"{loss:.4f}",
            "- (no DP)" if epsilon is None else f"{epsilon:.3f}",
            per_step,
            per_step * (self.steps - step),
        )


def train_bi_encoder(
    model: BiEncoder,
    tokenizer: PreTrainedTokenizerBase,
    examples: Examples,
    item_texts: Sequence[str],
    *,
    epochs: int,
    max_steps: int,
    batch_size: int,
    learning_rate: float,
    max_history: int,
    max_query_tokens: int,
    max_item_tokens: int,
    seed: int,
    dp: DPSettings | None,
    examples_per_user: int = 1,
    negatives: int = 0,
    refresh_every: int = 25,
    device: str = "auto",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    distributed: bool = False,
) -> TrainResult:
    """Fine-tune in place; with trained encoder layers the item table is refreshed every `refresh_every` steps
    and at the end (a frozen encoder keeps the table it started with).

    `distributed=True` makes this process one rank of the initialized default process group: it trains on
    its share of each global batch and the gradients are summed across ranks (ml.training.distributed
    explains why the DP guarantee is the single process's). Started by `train_data_parallel`.

    `examples_per_user` > 1 gives each sampled shopper up to that many of its examples in a step (its loss is
    their mean); it needs a frozen encoder (its search queries are then cached vectors), and with a trained
    encoder each step takes one example per shopper.

    `negatives` > 0 with a larger catalogue: each step scores each example's target and a uniform sample of that
    many items, not every item (ml.training.negatives); 0 scores every item.
    """
    if len(examples) == 0:
        raise ValueError("no training examples: the training window holds no shopper with two interactions")
    secure = dp is not None and dp.secure_rng
    if secure and distributed:
        raise ValueError(
            "dp.secure_rng draws DP-SGD's sample of shoppers from the OS in one process, but the ranks "
            "of a data-parallel run share a seeded sample: train with world_size=1, or set "
            "dp.secure_rng=false for a data-parallel run"
        )
    torch.manual_seed(seed)
    dev = pick_device(device)
    model.to(dev)
    if not model.item_table.abs().sum():
        refresh_item_table(model, tokenizer, item_texts, max_item_tokens)
    query_cache = None
    if model.text_tower_frozen:  # the text tower cannot change: encode each search query once
        texts = [q or "" for q in examples.queries]
        query_cache = torch.zeros(len(texts), model.dim)
        unique = sorted({q for q in examples.queries if q})  # shoppers repeat queries: encode each once
        if unique:
            vectors = model.encode_texts(tokenizer, unique, max_query_tokens).to(query_cache.dtype)
            row_of = {q: i for i, q in enumerate(unique)}
            search_rows = [i for i, q in enumerate(examples.queries) if q]
            query_cache[search_rows] = vectors[[row_of[texts[i]] for i in search_rows]]
    per_user = examples_per_user if query_cache is not None else 1
    if per_user != examples_per_user:
        log.warning(
            "examples_per_user=%d needs a frozen encoder: with trained encoder layers each step takes "
            "one example per shopper",
            examples_per_user,
        )
    dataset = PerUserDataset(examples, seed, per_user)
    steps, sample_rate = planned_steps(len(dataset), batch_size, epochs, max_steps)
    n_items = model.item_table.shape[0]
    sampler = NegativeSampler(n_items, negatives, seed + 2) if use_sampling(n_items, negatives) else None
    if sampler is not None:
        log.info(
            "training on sampled negatives: %d of the %d items a step, plus each example's target", negatives, n_items
        )
    collate = make_collate(examples, tokenizer, max_history, max_query_tokens, query_cache, per_user, sampler)
    world_size = 1
    if distributed:
        world_size = torch.distributed.get_world_size()
        loader = shard_loader(dataset, collate, batch_size=batch_size, poisson=dp is not None, seed=seed)
    elif secure:  # Opacus keeps this sample (poisson_sampling=False below): an empty draw gives an empty target

        def collate_or_empty(rows: Sequence[tuple[int, ...]]) -> dict[str, torch.Tensor]:
            return collate(rows) if rows else {"target": torch.zeros(0, dtype=torch.long)}

        loader = DataLoader(
            dataset,
            batch_sampler=SecurePoissonBatches(len(dataset), math.ceil(len(dataset) / batch_size)),
            collate_fn=collate_or_empty,
        )
    else:
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            collate_fn=collate,
            generator=torch.Generator().manual_seed(seed),
        )
    groups = parameter_groups(model, learning_rate)
    # under DP, Adam turns the noise of low-signal coordinates into full-size steps; SGD keeps it small
    optimizer = (
        torch.optim.SGD(groups, lr=learning_rate, momentum=0.9)
        if dp is not None
        else torch.optim.AdamW(groups, lr=learning_rate)
    )
    criterion: nn.Module = nn.CrossEntropyLoss()
    engine = None
    module: nn.Module = model
    if dp is not None:
        from opacus import PrivacyEngine

        with warnings.catch_warnings():
            if secure:  # its warning is about Opacus' own generator, which secure_rng replaces below
                warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant="rdp", secure_mode=False)
        model.train()
        model.per_sample_bias = True  # a trained item bias gets its per-sample gradient (BiEncoder.item_biases)
        if distributed:  # DPDDP: rank 0's weights everywhere, and make_private picks the distributed optimizer
            from opacus.distributed import DifferentiallyPrivateDistributedDataParallel as DPDDP

            module = DPDDP(model)
        # distributed: the shard loader already draws the global Poisson sample, so Opacus keeps it
        module, optimizer, criterion, loader = engine.make_private(
            module=module,
            optimizer=optimizer,
            criterion=criterion,
            data_loader=loader,
            noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            poisson_sampling=not (distributed or secure),
            grad_sample_mode="ghost",
        )
        if distributed or secure:  # what poisson_sampling=True would have set
            cast("AbstractGradSampleModule", module).forbid_grad_accumulation()
        if secure:
            use_secure_noise(cast("DPOptimizer", optimizer))
    elif distributed:
        for p in model.parameters():  # the ranks start from rank 0's weights
            torch.distributed.broadcast(p.data, 0)
    module.train()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    started = time.perf_counter()
    step, epoch, losses, epoch_metrics = 0, 0, [], []
    show_progress = not distributed or torch.distributed.get_rank() == 0
    # the bar draws only in an interactive terminal (disable=None); the progress lines go to logging, which the
    # Airflow task log and `vetted run` show, every tenth of the run or PROGRESS_SECONDS, whichever comes first
    bar = tqdm(total=steps, desc="train", unit="step", leave=False, disable=None if show_progress else True)
    progress = _Progress(steps, every=max(1, steps // 10)) if show_progress else None
    while step < steps:
        epoch += 1
        epoch_losses = []
        for batch in loader:
            if step >= steps:
                break
            n_local = len(batch["target"])
            if n_local == 0 and not distributed:  # Poisson sampling can draw nobody
                continue
            optimizer.zero_grad(set_to_none=True)
            if n_local:
                batch = {k: v.to(dev) for k, v in batch.items()}
                target = batch.pop("target")
                if "negatives" in batch:  # column 0 of the logits is each example's target
                    batch["target"] = target
                    target = sampled_targets(target, IGNORE)
                with autocast:
                    logits = module(**batch)
                logits = logits.float()
                if engine is None:
                    loss = per_user_loss(logits, target).mean()
                elif logits.dim() == 3:  # grouped: Opacus averages each shopper's real slots (ignore_index)
                    loss = criterion(logits.flatten(0, 1), target.flatten(), shape=logits.shape)
                else:
                    loss = criterion(logits, target)
                loss.backward()
                epoch_losses.append(float(loss.item()))
            else:  # an empty share of a non-empty global batch: adds zero, joins the all-reduce
                zero_gradients(optimizer)
            if distributed and dp is None:
                average_gradients(optimizer, n_local)
            optimizer.step()
            step += 1
            bar.update(1)
            if epoch_losses:
                bar.set_postfix(loss=f"{epoch_losses[-1]:.3f}")
            if progress is not None and progress.due(step):
                spent = float(engine.get_epsilon(dp.delta)) if engine is not None and dp is not None else None
                progress.report(step, epoch_losses[-1] if epoch_losses else None, spent)
                if spent is not None:
                    bar.set_postfix(loss=f"{epoch_losses[-1]:.3f}" if epoch_losses else "-", eps=f"{spent:.2f}")
            if step % refresh_every == 0 and model.bert.encoder.layer[-1].output.dense.weight.requires_grad:
                refresh_item_table(model, tokenizer, item_texts, max_item_tokens)
                module.train()
        losses.extend(epoch_losses)
        metrics = {"train_loss": float(np.mean(epoch_losses)) if epoch_losses else float("nan"), "steps": step}
        if engine is not None:
            metrics["epsilon_sgd_spent"] = float(engine.get_epsilon(dp.delta))  # type: ignore[union-attr]
        epoch_metrics.append(metrics)
        if on_epoch:
            on_epoch(epoch, metrics)
    bar.close()
    if not model.text_tower_frozen:  # a frozen encoder gives the table it started with (a catalogue pass saved)
        refresh_item_table(model, tokenizer, item_texts, max_item_tokens)
    model.eval()
    seconds = time.perf_counter() - started
    dp_info: DPInfo | None = None
    if engine is not None and dp is not None:
        dp_info = {
            "noise_multiplier": float(cast("DPOptimizer", optimizer).noise_multiplier),
            "max_grad_norm": dp.max_grad_norm,
            "sample_rate": sample_rate,
            "steps": step,
            "accountant": "rdp",
            "epsilon_sgd": float(engine.get_epsilon(dp.delta)),
            "delta": dp.delta,
            "clipping": "ghost (per shopper)",
            "examples_per_user": per_user,
            "secure_rng": secure,
            "noise_source": SECURE_SOURCE if secure else f"torch generator seeded with {seed}",
        }
        if hasattr(module, "_close"):
            cast("AbstractGradSampleModule", module)._close()
    return TrainResult(
        steps=step,
        epochs=step * sample_rate,
        device=str(dev),
        seconds=seconds,
        seconds_per_step=seconds / max(1, step),
        final_loss=float(np.mean(losses[-10:])) if losses else 0.0,
        epoch_metrics=epoch_metrics,
        dp=dp_info,
        world_size=world_size,
    )
