"""The Games crowd (amazon2018-games) in the quality and privacy benchmarks: seeded shopper subsets of the corpus,
and what user-level DP costs against the same model trained without it, with a paired interval over shoppers.

- `shoppers` / `write_subset`: a random subset of the corpus' shoppers, written as RecBole atomic files (every
  `.inter` file's rows of the chosen shoppers, the `.item` catalogue whole) to a folder the caller owns, which
  must lie outside the repository: the corpus' terms forbid redistributing it. The catalogue stays whole so
  that every crowd size ranks its test rows against the same 16,859 items: the curve moves with the shoppers
  alone. Subsets of one seed are nested (one seeded order of the shoppers, its first n), so a larger crowd adds
  shoppers to a smaller one instead of drawing others.
- `twin_ratio`: the DP candidate's NDCG@k over its non-DP twin's (same features, same cases), with the percentile
  interval of the paired bootstrap over shoppers the evaluate stage draws (`ml.evaluation.compare`).
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import SHARED_DATA

GAMES = SHARED_DATA / "amazon2018-games"
USER_FIELD = "user_id"
ROOT = Path(__file__).resolve().parents[1]


def require_games(path: Path = GAMES) -> Path:
    if not path.is_dir():
        raise SystemExit(f"{path} is absent: this benchmark reads the real amazon2018-games corpus")
    return path


def _inter_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("*.inter"))
    if not files:
        raise ValueError(f"{folder} holds no .inter file: not a RecBole atomic folder")
    return files


def _user_column(header: str, path: Path) -> int:
    names = [field.split(":", 1)[0] for field in header.rstrip("\n").split("\t")]
    if USER_FIELD not in names:
        raise ValueError(f"{path.name}: the header {header.strip()!r} has no {USER_FIELD} field")
    return names.index(USER_FIELD)


def _rows(path: Path) -> tuple[str, int, list[str]]:
    """(header, user column, data lines) of one atomic file."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    if not lines:
        raise ValueError(f"{path} is empty: an atomic file starts with its typed header")
    return lines[0], _user_column(lines[0], path), lines[1:]


def shoppers(folder: Path) -> list[str]:
    """Every shopper id of the folder's `.inter` files, sorted."""
    ids: set[str] = set()
    for path in _inter_files(folder):
        _, col, rows = _rows(path)
        ids.update(row.split("\t")[col].strip() for row in rows if row.strip())
    return sorted(ids)


def crowd_order(folder: Path, seed: int) -> list[str]:
    """The folder's shoppers in one seeded random order: the crowd of size n is its first n (nested subsets)."""
    ids = shoppers(folder)
    return [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]


def parse_crowd(text: str, total: int) -> list[int]:
    """`3000,10000,all` -> sorted crowd sizes, `all` being the corpus' `total` shoppers."""
    sizes = set()
    for part in (p.strip() for p in text.split(",")):
        if part == "all":
            sizes.add(total)
            continue
        try:
            n = int(part)
        except ValueError:
            raise ValueError(f"--crowd takes shopper counts or 'all', comma-separated; got {part!r}") from None
        if not 1 <= n <= total:
            raise ValueError(f"--crowd {n}: a crowd holds between 1 and the corpus' {total} shoppers")
        sizes.add(n)
    return sorted(sizes)


def write_subset(folder: Path, chosen: Sequence[str], out: Path) -> Path:
    """The rows of the `chosen` shoppers from every `.inter` file of `folder`, in file order, and every `.item`
    file whole, written to `out` (created; it must lie outside the repository)."""
    out = out.resolve()
    if out.is_relative_to(ROOT):
        raise ValueError(f"{out} lies inside the repository: the corpus' terms forbid copying it there")
    keep = set(chosen)
    missing = keep - set(shoppers(folder))
    if missing:
        raise ValueError(f"{len(missing)} chosen shopper(s) are not in {folder}, e.g. {sorted(missing)[0]!r}")
    out.mkdir(parents=True, exist_ok=True)
    for path in _inter_files(folder):
        header, col, rows = _rows(path)
        kept = [row for row in rows if row.strip() and row.split("\t")[col].strip() in keep]
        (out / path.name).write_text(header + "".join(kept), encoding="utf-8")
    for path in folder.glob("*.item"):
        shutil.copyfile(path, out / path.name)
    return out


def twin_ratio(dp_per_case: pd.DataFrame, twin_per_case: pd.DataFrame, seed: int) -> dict[str, Any]:
    """NDCG of the DP candidate / NDCG of its non-DP twin on the same cases: the point on the hold-out and the
    percentile interval over the evaluate stage's own resamples of shoppers (paired: both on each resample)."""
    from ml.evaluation.bootstrap import DEFAULT_CONFIDENCE, hold_out, ratio_draws, summary
    from ml.evaluation.compare import CANDIDATE, NDCG_PREFIX, per_case_resamples

    a, b = dp_per_case["user_id"].astype(str).to_numpy(), twin_per_case["user_id"].astype(str).to_numpy()
    if a.shape != b.shape or not (a == b).all():
        raise ValueError("the DP run and its twin were evaluated on different cases: branch the twin off the DP run")
    column = f"{NDCG_PREFIX}{CANDIDATE}"
    dp, twin = dp_per_case[column].to_numpy(), twin_per_case[column].to_numpy()
    resamples = per_case_resamples(dp_per_case, seed)
    point = ratio_draws(hold_out(resamples).means(dp), hold_out(resamples).means(twin))[0]
    draws = ratio_draws(resamples.means(dp), resamples.means(twin))
    return summary(float(point) if np.isfinite(point) else None, draws, DEFAULT_CONFIDENCE)


def twin_ratio_of(dp_ctx, twin_ctx, seed: int) -> dict[str, Any]:
    """`twin_ratio` from two evaluated run folders."""
    from ml.pipeline.context import PER_CASE

    return twin_ratio(pd.read_parquet(dp_ctx.path(PER_CASE)), pd.read_parquet(twin_ctx.path(PER_CASE)), seed)


def interval_text(s: dict[str, Any] | None) -> str:
    """`1.053 [0.981, 1.122]`, or `n/a` when the figure is undefined."""
    if not s or s.get("value") is None:
        return "n/a"
    if s.get("lower") is None or s.get("upper") is None:
        return f"{s['value']:.3f}"
    return f"{s['value']:.3f} [{s['lower']:.3f}, {s['upper']:.3f}]"
