"""Verification metrics on cosine scores: ROC AUC, thresholds at a false-accept rate, LFW 10-fold accuracy.

Pure numpy. Scores are cosines (higher = more similar); a pair is "accepted" when score >= threshold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import rankdata


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return a @ b.T


def roc_auc(genuine: np.ndarray, impostor: np.ndarray) -> float:
    """Probability that a random genuine score exceeds a random impostor score (ties count half)."""
    genuine, impostor = np.asarray(genuine, float), np.asarray(impostor, float)
    if genuine.size == 0 or impostor.size == 0:
        return float("nan")
    ranks = rankdata(np.concatenate([genuine, impostor]))
    n_g, n_i = genuine.size, impostor.size
    return float((ranks[:n_g].sum() - n_g * (n_g + 1) / 2) / (n_g * n_i))


def threshold_at_far(impostor: np.ndarray, far: float) -> float:
    """Smallest threshold whose false-accept rate (share of impostor scores >= threshold) is <= `far`.

    Resolution is limited by the number of impostor pairs: with n pairs, FAR below 1/n cannot be resolved and the
    threshold becomes just above the highest impostor score.
    """
    scores = np.sort(np.asarray(impostor, float))[::-1]
    if scores.size == 0:
        raise ValueError("no impostor scores")
    allowed = int(np.floor(far * scores.size))  # how many impostors may be accepted
    if allowed >= scores.size:
        return float(scores[-1])
    # accept the `allowed` highest impostors at most: put the threshold just above the next one
    return float(np.nextafter(scores[allowed], np.inf))


def tar_at(genuine: np.ndarray, threshold: float) -> float:
    genuine = np.asarray(genuine, float)
    return float((genuine >= threshold).mean()) if genuine.size else float("nan")


def best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """Threshold maximising accuracy on (scores, same) — the LFW protocol's training step."""
    order = np.sort(np.unique(scores))
    candidates = np.concatenate([[order[0] - 1e-6], (order[:-1] + order[1:]) / 2, [order[-1] + 1e-6]])
    acc = [((scores >= t) == same).mean() for t in candidates]
    return float(candidates[int(np.argmax(acc))])


def ten_fold_accuracy(scores: np.ndarray, same: np.ndarray, folds: np.ndarray) -> tuple[float, float]:
    """Standard LFW protocol: threshold chosen on 9 folds, accuracy measured on the 10th; mean and std."""
    scores, same, folds = np.asarray(scores, float), np.asarray(same, bool), np.asarray(folds)
    accs = []
    for k in np.unique(folds):
        train, test = folds != k, folds == k
        t = best_threshold(scores[train], same[train])
        accs.append(((scores[test] >= t) == same[test]).mean())
    return float(np.mean(accs)), float(np.std(accs))


def pair_scores(
    embeddings: np.ndarray, identities: Sequence[str], *, max_impostor: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Genuine scores (all same-person pairs) and impostor scores (all, or a seeded sample, of different-person
    pairs)."""
    ids = np.asarray(identities)
    sims = cosine_matrix(embeddings, embeddings)
    iu, ju = np.triu_indices(len(ids), k=1)
    same = ids[iu] == ids[ju]
    genuine = sims[iu[same], ju[same]]
    imp_i, imp_j = iu[~same], ju[~same]
    if max_impostor is not None and imp_i.size > max_impostor:
        pick = np.random.default_rng(seed).choice(imp_i.size, size=max_impostor, replace=False)
        imp_i, imp_j = imp_i[pick], imp_j[pick]
    return genuine, sims[imp_i, imp_j]
