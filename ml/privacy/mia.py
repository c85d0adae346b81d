"""Membership-inference audit: how well can an outsider tell training shoppers from held-out ones?

The attacker sees one score per shopper (for example the model's score, or minus its loss, on that shopper's
true next item) and guesses "member" when the score is high. Sweeping the threshold gives a ROC curve:
- AUC 0.5 means the scores carry no membership signal; 1.0 means members are perfectly recognizable;
- advantage = max over thresholds of TPR - FPR (Yeom et al. 2018), the attacker's best edge over guessing;
- TPR at 1% FPR: how many members an attacker who may rarely be wrong finds (Carlini et al. 2022).
Members and non-members are balanced (the bigger side is subsampled with a fixed seed), so that the AUC is
not swayed by the class ratio and a result can be reproduced.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve

if TYPE_CHECKING:
    from ml.training.recommender import Recommender

log = logging.getLogger(__name__)

LOW_FPR = 0.01
AUDIT_SHARE = 0.1  # shoppers kept out of training as the audit's non-members
LOSS_ATTACK = (
    "loss threshold: mean log-probability of a shopper's own next items, "
    "trained shoppers vs shoppers held out of training"
)


def _clean(scores: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(scores, dtype=float).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: the audit needs at least one shopper on each side")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name} holds a non-finite score (first at index {bad}); score every shopper")
    return arr


def balance(members: np.ndarray, nonmembers: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Subsample the bigger side (without replacement, fixed seed) to the size of the smaller one."""
    n = min(members.size, nonmembers.size)
    rng = np.random.default_rng(seed)
    if members.size > n:
        members = members[np.sort(rng.choice(members.size, size=n, replace=False))]
    if nonmembers.size > n:
        nonmembers = nonmembers[np.sort(rng.choice(nonmembers.size, size=n, replace=False))]
    return members, nonmembers


def membership_inference_audit(
    member_scores: np.ndarray,
    nonmember_scores: np.ndarray,
    higher_means_member: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """AUC, advantage and TPR at 1% FPR of a threshold attack on the scores; n_* are the balanced counts used."""
    members = _clean(member_scores, "member_scores")
    nonmembers = _clean(nonmember_scores, "nonmember_scores")
    members, nonmembers = balance(members, nonmembers, seed)
    scores = np.concatenate([members, nonmembers])
    if not higher_means_member:
        scores = -scores
    labels = np.concatenate([np.ones(members.size), np.zeros(nonmembers.size)])
    auc = float(roc_auc_score(labels, scores))
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    advantage = float(np.max(tpr - fpr))
    tpr_low = float(np.max(tpr[fpr <= LOW_FPR]))
    result = {
        "auc": auc,
        "advantage": advantage,
        "tpr_at_1pct_fpr": tpr_low,
        "n_members": int(members.size),
        "n_nonmembers": int(nonmembers.size),
    }
    if members.size < 100:
        log.warning("membership audit on only %d shoppers per side: TPR at 1%% FPR is coarse", members.size)
    log.info("membership inference: AUC %.3f, advantage %.3f, TPR@1%%FPR %.3f", auc, advantage, tpr_low)
    return result


def split_audit_users(users: np.ndarray, seed: int) -> tuple[set[str], set[str]]:
    """Training shoppers and the held-out audit shoppers (same distribution, never trained on): AUDIT_SHARE of
    them, none when there are 10 or fewer (too few to hold any out)."""
    rng = np.random.default_rng(seed)
    users = np.sort(users)
    audit = (
        set(rng.choice(users, size=max(1, int(len(users) * AUDIT_SHARE)), replace=False)) if len(users) > 10 else set()
    )
    return set(users) - audit, audit


def loss_attack(
    rec: Recommender, train_set: pd.DataFrame, members: set[str], nonmembers: set[str], seed: int, per_side: int = 500
) -> dict[str, Any]:
    """The loss-based attack on a trained recommender: a shopper whose own examples the model scores unusually
    well was likely trained on. Score per shopper = mean log-probability the model gives their next items in the
    training window, at most `per_side` shoppers a side (a seeded sample); returns the audit and the attack."""
    rows = train_set[(train_set["kind"] == "next_item") & (train_set["history"].map(len) > 0)]
    rows = rows[rows["item_id"].isin(rec.index_of)]
    rng = np.random.default_rng(seed)

    def scores_for(users: set[str]) -> np.ndarray:
        chosen = sorted(set(rows["user_id"]) & users)
        if len(chosen) > per_side:
            chosen = sorted(rng.choice(chosen, size=per_side, replace=False))
        part = rows[rows["user_id"].isin(set(chosen))]
        if part.empty:
            return np.zeros(0)
        logits = rec.scores(rec.history_vectors([list(h) for h in part["history"]]))
        logits = logits - logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        target = np.array([rec.index_of[i] for i in part["item_id"]])
        per_row = logp[np.arange(len(part)), target]
        return pd.Series(per_row).groupby(part["user_id"].to_numpy()).mean().to_numpy()

    return {**membership_inference_audit(scores_for(members), scores_for(nonmembers)), "attack": LOSS_ATTACK}
