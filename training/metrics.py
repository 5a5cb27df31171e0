"""Multi-rater segmentation metrics, per image, exactly as docs/dpersona-model.md defines them.

All functions take binary numpy masks: raters [R,H,W] and predictions [S,H,W] (bool or 0/1), except
Dice_soft which takes the predicted probabilities.
"""
from __future__ import annotations

from typing import Dict, List

import numpy as np
from scipy.optimize import linear_sum_assignment

EPS = 1e-8
SOFT_THRESHOLDS = (0.1, 0.3, 0.5, 0.7, 0.9)


def _flat(masks) -> np.ndarray:
    m = np.asarray(masks)
    return (m.reshape(m.shape[0], -1) > 0.5).astype(np.float64)


def dice(a, b) -> float:
    """(2|a.b| + 1e-8)/(|a|+|b| + 1e-8); two empty masks give 1."""
    a = np.asarray(a) > 0.5
    b = np.asarray(b) > 0.5
    return float((2 * np.logical_and(a, b).sum() + EPS) / (a.sum() + b.sum() + EPS))


def pairwise_dice(a, b) -> np.ndarray:
    """[len(a), len(b)] Dice matrix."""
    fa, fb = _flat(a), _flat(b)
    inter = fa @ fb.T
    sums = fa.sum(1)[:, None] + fb.sum(1)[None, :]
    return (2 * inter + EPS) / (sums + EPS)


def _pairwise_distance(a, b, empty_pair_distance: float) -> np.ndarray:
    fa, fb = _flat(a), _flat(b)
    inter = fa @ fb.T
    union = fa.sum(1)[:, None] + fb.sum(1)[None, :] - inter
    d = 1 - inter / (union + EPS)
    if empty_pair_distance != 1.0:
        d = np.where(union == 0, empty_pair_distance, d)
    return d


def ged(raters, preds, empty_pair_distance: float = 1.0) -> float:
    """GED = 2E[d(L,P)] - E[d(L,L')] - E[d(P,P')], d = 1 - IoU, means over all ordered pairs
    (i = j included). empty_pair_distance=1 is the reference-compatible value (IoU denominator
    + 1e-8 makes empty-vs-empty IoU 0); 0 treats two empty masks as identical."""
    d_lp = _pairwise_distance(raters, preds, empty_pair_distance).mean()
    d_ll = _pairwise_distance(raters, raters, empty_pair_distance).mean()
    d_pp = _pairwise_distance(preds, preds, empty_pair_distance).mean()
    return float(2 * d_lp - d_ll - d_pp)


def dice_soft(raters, pred_probs, thresholds=SOFT_THRESHOLDS) -> float:
    """Mean over thresholds t of Dice(mean rater mask > t, mean predicted probability > t)."""
    mean_l = np.asarray(raters, dtype=np.float64).mean(0)
    mean_p = np.asarray(pred_probs, dtype=np.float64).mean(0)
    return float(np.mean([dice(mean_l > t, mean_p > t) for t in thresholds]))


def dice_max(raters, preds) -> float:
    """Mean over predictions of the best Dice against any rater."""
    return float(pairwise_dice(preds, raters).max(axis=1).mean())


def dice_match(raters, preds) -> float:
    """Hungarian matching of raters to distinct predictions (needs S >= R), mean matched Dice."""
    raters = np.asarray(raters)
    preds = np.asarray(preds)
    if preds.shape[0] < raters.shape[0]:
        raise ValueError(f"Dice_match needs at least as many predictions ({preds.shape[0]}) as "
                         f"raters ({raters.shape[0]})")
    d = pairwise_dice(raters, preds)
    rows, cols = linear_sum_assignment(-d)
    return float(d[rows, cols].mean())


def personalised_dice(raters, heads) -> np.ndarray:
    """Dice(head r, rater r) without matching, one value per rater."""
    raters = np.asarray(raters)
    heads = np.asarray(heads)
    if raters.shape[0] != heads.shape[0]:
        raise ValueError(f"{heads.shape[0]} heads for {raters.shape[0]} raters")
    return np.array([dice(raters[r], heads[r]) for r in range(raters.shape[0])])


def matched_per_rater_dice(raters, heads) -> np.ndarray:
    """The reference's per-rater numbers: Dice of each rater with its Hungarian-matched head."""
    d = pairwise_dice(raters, heads)
    rows, cols = linear_sum_assignment(-d)
    out = np.zeros(len(rows))
    out[rows] = d[rows, cols]
    return out


class MetricAccumulator:
    """Per-image metrics of stage I samples and stage II heads, averaged over images."""

    def __init__(self, num_raters: int, threshold: float = 0.5):
        self.num_raters = num_raters
        self.threshold = threshold
        self.rows: Dict[str, List[float]] = {}
        self.per_rater: List[np.ndarray] = []
        self.per_rater_matched: List[np.ndarray] = []

    def _add(self, key: str, value: float) -> None:
        self.rows.setdefault(key, []).append(float(value))

    def update(self, raters: np.ndarray, sample_probs: np.ndarray, rater_probs=None) -> None:
        """raters [R,H,W] 0/1, sample_probs [S,H,W], rater_probs [R,H,W] or None."""
        preds = sample_probs > self.threshold
        self._add("ged", ged(raters, preds, 1.0))
        self._add("ged_empty0", ged(raters, preds, 0.0))
        self._add("dice_soft", dice_soft(raters, sample_probs))
        self._add("dice_max", dice_max(raters, preds))
        if preds.shape[0] >= raters.shape[0]:
            self._add("dice_match", dice_match(raters, preds))
        if rater_probs is not None:
            heads = rater_probs > self.threshold
            self._add("heads_ged", ged(raters, heads, 1.0))
            self._add("heads_ged_empty0", ged(raters, heads, 0.0))
            self._add("heads_dice_soft", dice_soft(raters, rater_probs))
            self._add("heads_dice_max", dice_max(raters, heads))
            self._add("heads_dice_match", dice_match(raters, heads))
            pd = personalised_dice(raters, heads)
            self.per_rater.append(pd)
            self.per_rater_matched.append(matched_per_rater_dice(raters, heads))
            self._add("personalised_dice", pd.mean())

    def result(self) -> Dict[str, object]:
        out: Dict[str, object] = {k: float(np.mean(v)) for k, v in self.rows.items()}
        out["images"] = len(next(iter(self.rows.values()))) if self.rows else 0
        if self.per_rater:
            out["personalised_dice_per_rater"] = [float(x) for x in np.mean(self.per_rater, 0)]
            out["matched_dice_per_rater"] = [float(x) for x in
                                             np.mean(self.per_rater_matched, 0)]
        return out
