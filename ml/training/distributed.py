"""Data-parallel training over several GPUs (or CPU processes) with the same user-level DP guarantee.

One process per rank, started with `torch.multiprocessing` (the Airflow task is a single process, so the
launcher spawns the ranks itself; no `torchrun` is needed). Backend nccl on CUDA (one GPU per rank), gloo on
CPU (used by the tests). With one rank, `train_data_parallel` calls `train_bi_encoder` directly: exactly the
single-process path.

How the privacy accounting stays correct (checked against Opacus 1.6's code):

- **Sampling.** Every rank draws the *same* global Poisson sample of shoppers (a generator seeded alike on
  every rank: each shopper is in the step's sample with probability q = 1 / steps-per-epoch, as in the
  single process) and trains on its share of it (every world_size-th sampled shopper). The union of the
  shares is the global sample, so the mechanism is the sampled Gaussian mechanism at the *global* rate q,
  the rate `plan_budget` was given. A step whose global sample is empty is skipped on every rank, as the
  single process skips it. Opacus' own `DistributedUniformWithReplacementSampler` is not used: it drops a
  rank's empty local batch, so ranks would take different numbers of steps and the gradient all-reduce of
  one rank's step k would meet another rank's step k+1 (or hang). Opacus asks for a user sampler when
  `poisson_sampling=False` with DPDDP (opacus PR #745), which is what `make_private` is given here.
- **Clipping and noise.** The model is wrapped in Opacus' `DifferentiallyPrivateDistributedDataParallel`
  (it broadcasts rank 0's parameters), so `make_private` picks `DistributedDPOptimizerFastGradientClipping`.
  On each rank ghost clipping leaves the sum of that rank's clipped per-shopper gradients; only rank 0 adds
  Gaussian noise of std noise_multiplier * max_grad_norm (`add_noise` is a no-op on the other ranks); each
  rank divides by its expected batch size E / world_size (`make_private` divides the expected batch size by
  the world size), then the optimizer all-reduces with SUM and divides by world_size. The result on every
  rank is (sum of all clipped gradients + one noise draw) / E: noise once per global step with the planned
  multiplier, the same update as one process with the same sample.
- **Accounting.** `make_private` registers sample rate 1 / len(loader) = q with the accountant and every
  rank's optimizer counts each global step once, so rank 0's epsilon is the single-process accountant's
  epsilon for (noise, q, steps).

Without DP the same shared sampler shuffles, each rank takes its share of each global batch, and the
gradients are averaged weighted by each share's size: the global batch's mean gradient.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ml.training.model import BiEncoder
from ml.training.train import TrainResult, train_bi_encoder

BACKENDS = ("nccl", "gloo")
INIT_TIMEOUT = timedelta(minutes=10)


def world_size_for(device_count: int, requested: int) -> int:
    """How many training processes to start: `requested`, or with 0 every visible GPU when there are several.

    One GPU or none gives 1 (today's single-process path). Asking for more processes than GPUs is an error:
    DP-SGD ranks must not share a GPU silently.
    """
    if device_count < 0:
        raise ValueError(f"device_count must be >= 0, got {device_count}")
    if requested < 0:
        raise ValueError(f"world_size must be >= 0 (0 = every visible GPU), got {requested}")
    if requested == 0:
        return device_count if device_count > 1 else 1
    if requested > 1 and requested > device_count:
        raise ValueError(
            f"world_size={requested} needs {requested} GPUs, but {device_count} are visible; "
            f"set world_size to at most {max(device_count, 1)} (0 = automatic)"
        )
    return requested


@dataclass
class RankOutputs:
    """What the ranks hand back: rank 0's result and full state, and every rank's trained parameters."""

    result: TrainResult
    state: dict[str, torch.Tensor]
    rank_params: list[dict[str, torch.Tensor]]


def check_ranks_agree(rank_params: Sequence[dict[str, torch.Tensor]]) -> None:
    """Data-parallel ranks apply the same update, so their parameters must be equal; a difference is a bug."""
    reference = rank_params[0]
    for rank, params in enumerate(rank_params[1:], start=1):
        if params.keys() != reference.keys():
            raise RuntimeError(f"rank {rank} trained other parameters than rank 0")
        for name, value in params.items():
            if not torch.equal(value, reference[name]):
                raise RuntimeError(f"rank {rank} diverged from rank 0 on {name}: gradient synchronization failed")


def _rank_main(rank: int, world_size: int, backend: str, folder: str) -> None:
    """One rank: join the group, train on its shares, save what the parent needs."""
    work = Path(folder)
    payload = torch.load(work / "inputs.pt", weights_only=False)  # written by our parent, in its private folder
    if backend == "nccl":
        torch.cuda.set_device(rank)
        device = "cuda"
    else:
        device = "cpu"
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    dist.init_process_group(
        backend, init_method=f"file://{work / 'rendezvous'}", rank=rank, world_size=world_size, timeout=INIT_TIMEOUT
    )
    try:
        model = payload["model"]
        result = train_bi_encoder(
            model,
            payload["tokenizer"],
            payload["examples"],
            payload["item_texts"],
            device=device,
            distributed=True,
            **payload["kwargs"],
        )
        trained = {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad}
        torch.save(trained, work / f"rank{rank}.pt")
        if rank == 0:
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            torch.save({"result": result, "state": state}, work / "result.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(
    model: torch.nn.Module,
    tokenizer: Any,
    examples: Any,
    item_texts: Sequence[str],
    *,
    world_size: int,
    backend: str,
    **train_kwargs: Any,
) -> RankOutputs:
    """Spawn `world_size` ranks that train copies of `model` together; `model` itself is not changed.

    Inputs go to the ranks through a file (not as spawn arguments: torch would move the model's CPU
    tensors into shared memory, and CPU ranks would then update one another's parameters).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if world_size < 2:
        raise ValueError(f"run_ranks needs world_size >= 2, got {world_size}; one process needs no launcher")
    if backend == "nccl":
        world_size_for(torch.cuda.device_count(), world_size)  # raises when there are too few GPUs
    if train_kwargs.get("device", "auto") != "auto":
        raise ValueError("with several ranks the backend picks the device (nccl: one GPU per rank, gloo: CPU)")
    train_kwargs.pop("device", None)
    train_kwargs.pop("on_epoch", None)
    with tempfile.TemporaryDirectory(prefix="vetted-ddp-") as tmp:
        work = Path(tmp)
        torch.save(
            {
                "model": model,
                "tokenizer": tokenizer,
                "examples": examples,
                "item_texts": list(item_texts),
                "kwargs": train_kwargs,
            },
            work / "inputs.pt",
        )
        torch.multiprocessing.start_processes(
            _rank_main, args=(world_size, backend, str(work)), nprocs=world_size, join=True, start_method="spawn"
        )
        out = torch.load(work / "result.pt", weights_only=False)
        rank_params = [torch.load(work / f"rank{r}.pt") for r in range(world_size)]
    return RankOutputs(result=out["result"], state=out["state"], rank_params=rank_params)


def train_data_parallel(
    model: BiEncoder,
    tokenizer: Any,
    examples: Any,
    item_texts: Sequence[str],
    *,
    world_size: int,
    backend: str = "nccl",
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    **train_kwargs: Any,
) -> TrainResult:
    """Train `model` in place on `world_size` ranks (1: the single-process path) and return rank 0's result.

    `world_size` comes from `world_size_for`. The ranks' trained state is loaded into `model` (on the CPU);
    per-epoch metrics are replayed to `on_epoch` after the ranks finish, since only the parent process
    may log to MLflow. The result's timings are rank 0's, without the start-up of the processes.
    """
    if world_size == 1:
        return train_bi_encoder(model, tokenizer, examples, item_texts, on_epoch=on_epoch, **train_kwargs)
    outputs = run_ranks(model, tokenizer, examples, item_texts, world_size=world_size, backend=backend, **train_kwargs)
    check_ranks_agree(outputs.rank_params)
    model.to("cpu")
    model.load_state_dict(outputs.state)
    model.eval()
    if on_epoch is not None:
        for epoch, metrics in enumerate(outputs.result.epoch_metrics, start=1):
            on_epoch(epoch, metrics)
    return outputs.result
