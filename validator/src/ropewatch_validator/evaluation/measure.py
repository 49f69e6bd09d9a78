"""Detection and attribute metrics from matched tables (see ``ropewatch_validator.evaluation.match``).

Layout follows a model card's test table: confusion matrix rows = reference, columns = prediction;
per-class precision/recall/F1/support on matched pairs; accuracy and macro F1. A ratio with a zero
denominator is ``None`` (JSON null), never a silent 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ropewatch_validator.evaluation.metrics import confusion_matrix, pr_curve, prf, ratio


def detection(pred: pd.DataFrame, ref: pd.DataFrame) -> dict:
    tp = int((pred["match"] >= 0).sum())
    fp, fn = len(pred) - tp, len(ref) - tp
    p, r, f = prf(tp, fp, fn)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r, "f1": f}


def attribute(pred: pd.DataFrame, ref: pd.DataFrame, name: str, values: tuple[str, ...]) -> dict:
    """Confusion matrix on matched pairs, missed (unmatched reference) and extra (unmatched prediction)."""
    matched = pred[pred["match"] >= 0]
    pv = matched[name].to_numpy(object)
    rv = ref[name].to_numpy(object)[matched["match"].to_numpy()]
    index = {v: i for i, v in enumerate(values)}
    both = np.array([a in index and b in index for a, b in zip(rv, pv)], dtype=bool)
    cm = confusion_matrix([index[v] for v in rv[both]], [index[v] for v in pv[both]], len(values))
    per_class = {}
    for i, v in enumerate(values):
        tp = int(cm[i, i])
        p, r, f = prf(tp, int(cm[:, i].sum()) - tp, int(cm[i, :].sum()) - tp)
        per_class[v] = {"precision": p, "recall": r, "f1": f, "support": int(cm[i, :].sum())}
    f1s = [c["f1"] for c in per_class.values() if c["f1"] is not None]
    unmatched_ref = ref.loc[ref["match"] < 0, name]
    unmatched_pred = pred.loc[pred["match"] < 0, name]
    return {
        "name": name,
        "labels": list(values),
        "confusion_matrix": cm.tolist(),
        "row_totals": cm.sum(1).tolist(),
        "column_totals": cm.sum(0).tolist(),
        "missed": {v: int((unmatched_ref == v).sum()) for v in values},
        "extra": {v: int((unmatched_pred == v).sum()) for v in values},
        "per_class": per_class,
        "accuracy": ratio(np.trace(cm), cm.sum()),
        "macro_f1": float(np.mean(f1s)) if len(f1s) == len(values) else None,
        "pairs_without_value": int((~both).sum()),
    }


def has_scores(pred: pd.DataFrame) -> bool:
    """Real confidences exist: CVAT's Nuclio path stores 1.0 and servers < 2.56 store none."""
    s = pred["score"].to_numpy(float)
    return bool(len(s)) and not np.isnan(s).any() and not np.all(s == 1.0)


def average_precision(pred: pd.DataFrame, n_ref: int) -> tuple[float | None, dict | None]:
    """Non-interpolated AP = Σ ΔRecall·Precision over predictions sorted by score, recall over all references.

    Equal to sklearn's ``average_precision_score(is_tp, score) * tp / n_ref`` (its recall only sees
    predictions), which the tests use as the oracle.
    """
    if not has_scores(pred) or n_ref == 0:
        return None, None
    curve = pr_curve(pred["score"].to_numpy(float), pred["match"].to_numpy() >= 0, n_ref)
    step = max(1, len(curve["thresholds"]) // 200)  # keep the stored curve small
    return float(curve["ap"]), {
        k: curve[name][::step].tolist()
        for k, name in (("precision", "precision"), ("recall", "recall"), ("score", "thresholds"))
    }
