"""The counting metrics every report section uses, written once.

- ``ratio``: a share whose zero denominator is ``None`` (JSON null), never a silent 0.
- ``f1``: F1 from counts, vectorized; ``prf`` gives precision, recall and F1 of one class.
- ``confusion_matrix``: rows = truth, columns = prediction, over class indices.
- ``pr_curve``: precision/recall at every distinct score and step-wise (non-interpolated) AP, with
  recall over an explicit number of relevant items (all references for detection, which a ranked list
  of predictions may not reach; all positives for a classifier's scores).
- ``roc_curve``: false/true positive rates after each distinct score.
- ``groups``: row positions per key in one sort (per frame, per request).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike


def ratio(num: float, den: float) -> float | None:
    return float(num) / float(den) if den else None


def f1(tp: ArrayLike, fp: ArrayLike, fn: ArrayLike) -> np.ndarray:
    """2·TP / (2·TP + FP + FN), 0 where nothing was predicted or present."""
    tp, fp, fn = (np.asarray(x, dtype=np.float64) for x in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def prf(tp: int, fp: int, fn: int) -> tuple[float | None, float | None, float | None]:
    """Precision, recall and F1 of one class; F1 is None when precision or recall is undefined."""
    p, r = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return p, r, (None if p is None or r is None else float(f1(tp, fp, fn)))


def confusion_matrix(truth: ArrayLike, pred: ArrayLike, n_classes: int) -> np.ndarray:
    """``n_classes`` square int64 matrix of class indices; rows = truth, columns = prediction."""
    t = np.asarray(truth, dtype=np.int64)
    q = np.asarray(pred, dtype=np.int64)
    return np.bincount(t * n_classes + q, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def pr_curve(scores: np.ndarray, hits: np.ndarray, n_relevant: int | None = None) -> dict[str, Any]:
    """Precision/recall after each distinct score (descending; ties enter together) and AP = Σ ΔR·P.

    ``hits`` marks the relevant items among the scored ones; recall is over ``n_relevant`` (default:
    the hits). Returns ``precision``, ``recall``, ``thresholds`` arrays and ``ap`` (NaN with nothing
    relevant).
    """
    s = np.asarray(scores, dtype=np.float64)
    h = np.asarray(hits, dtype=np.float64)
    n_rel = float(h.sum() if n_relevant is None else n_relevant)
    order = np.argsort(-s, kind="mergesort")
    s, h = s[order], h[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1] if s.size else np.array([], dtype=np.int64)
    tp = np.cumsum(h)[last] if s.size else np.zeros(0)
    precision = tp / (last + 1)
    recall = tp / n_rel if n_rel else np.zeros_like(tp)
    ap = float(np.sum(np.diff(np.r_[0.0, recall]) * precision)) if n_rel else float("nan")
    return {"precision": precision, "recall": recall, "thresholds": s[last], "ap": ap}


def roc_curve(scores: np.ndarray, positive: np.ndarray) -> dict[str, np.ndarray]:
    """ROC points after each distinct score (descending; ties enter together), from (0, 0) to (1, 1):
    ``fpr``, ``tpr`` and the ``thresholds`` (score >= t counts as positive; the first is +inf)."""
    s = np.asarray(scores, dtype=np.float64)
    h = np.asarray(positive, dtype=np.float64)
    order = np.argsort(-s, kind="mergesort")
    s, h = s[order], h[order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1] if s.size else np.array([], dtype=np.int64)
    tp, fp = np.cumsum(h)[last], np.cumsum(1 - h)[last]
    n_pos, n_neg = h.sum(), (1 - h).sum()
    return {
        "fpr": np.r_[0.0, fp / n_neg if n_neg else np.zeros_like(fp)],
        "tpr": np.r_[0.0, tp / n_pos if n_pos else np.zeros_like(tp)],
        "thresholds": np.r_[np.inf, s[last]],
    }


def groups(keys: np.ndarray) -> dict[Any, np.ndarray]:
    """Row positions per key (ascending within a key), in one stable sort."""
    keys = np.asarray(keys)
    order = np.argsort(keys, kind="stable")
    uniq, starts = np.unique(keys[order], return_index=True)
    return dict(zip(uniq.tolist(), np.split(order, starts[1:])))
