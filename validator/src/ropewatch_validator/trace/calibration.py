"""Ranking, calibration and threshold analysis of the rope classifier's logged scores.

Everything works on plain arrays: ``z`` is the logged pre-temperature logit
(``logit_correct - logit_wrong``), ``y`` is 1 where a person's final answer is ``correct`` and
0 where it is ``wrong``. The decision rule is the checkpoint's: ``correct`` iff
``sigmoid(z / T) >= thr``, i.e. ``z >= T * logit(thr)``. Because that rule is monotone in ``z``,
thresholds are searched on ``z`` and re-expressed in probability space for any temperature.

ECE is **top-label** ECE (Guo et al., 2017): the confidence of a prediction is
``max(p, 1 - p)`` with ``p = P(correct)``, it is right when the arg-max class (``correct`` iff
``p >= 0.5``) equals the truth, and the gap ``|accuracy - confidence|`` is averaged over 15
equal-width bins on [0, 1] weighted by bin size (bins are right-closed, ``(lo, hi]``, the first
one also takes 0). The reliability diagram uses the same bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit, logit
from scipy.stats import rankdata

from ropewatch_core.decision import p_correct
from ropewatch_core.errors import Rejected
from ropewatch_core.jsonio import plain
from ropewatch_core.spec import ATTRIBUTE_VALUES
from ropewatch_validator.evaluation.metrics import confusion_matrix, f1, pr_curve
from ropewatch_validator.trace.model import Calibration

CLASSES = ATTRIBUTE_VALUES  # confusion-matrix order: index 0 = wrong, 1 = correct
N_BINS = 15
TEMPERATURE_BOUNDS = (0.05, 20.0)  # the search range of fit_temperature (on log T)
NLL_GAIN = 1e-9  # the least NLL improvement a new temperature must bring to be stored


def _as_arrays(scores: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    t = np.asarray(y).astype(np.int64).ravel()
    if s.shape != t.shape:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {t.size}")
    if not np.isin(t, (0, 1)).all():
        raise ValueError("labels must be 0 (wrong) or 1 (correct)")
    return s, t


def probability(z: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """P(correct) = sigmoid(z / T), the function's own formula."""
    return p_correct(z, temperature)


def threshold_to_logit(thr: float, temperature: float = 1.0) -> float:
    """The logit cut equivalent to ``sigmoid(z/T) >= thr``: ``z >= T * logit(thr)``."""
    if not 0.0 < thr < 1.0:
        return float("-inf") if thr <= 0.0 else float("inf")
    return float(temperature * logit(thr))


def logit_to_threshold(z_cut: float, temperature: float = 1.0) -> float:
    """Inverse of :func:`threshold_to_logit`: the ``thr`` that keeps the cut ``z >= z_cut``."""
    return float(expit(z_cut / temperature))


def reexpress_threshold(thr: float, old_temperature: float, new_temperature: float) -> float:
    """Same decisions under a new temperature: sigma(z/T_new) >= t' <=> sigma(z/T_old) >= thr."""
    return logit_to_threshold(threshold_to_logit(thr, old_temperature), new_temperature)


# ---------------------------------------------------------------------------------------- calibration
def reliability(p_correct: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> dict:
    """Top-label reliability-diagram data: per bin count, mean confidence, accuracy."""
    p, t = _as_arrays(p_correct, y)
    pred = (p >= 0.5).astype(np.int64)
    conf = np.where(pred == 1, p, 1.0 - p)
    hit = (pred == t).astype(np.float64)
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(idx, weights=hit, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        acc = np.where(count > 0, hit_sum / np.maximum(count, 1), np.nan)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return {"lower": edges[:-1], "upper": edges[1:], "count": count, "confidence": mean_conf, "accuracy": acc}


def ece(p_correct: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """Top-label expected calibration error over ``n_bins`` equal-width bins."""
    r = reliability(p_correct, y, n_bins)
    n = r["count"].sum()
    if n == 0:
        return float("nan")
    used = r["count"] > 0
    gaps = np.abs(r["accuracy"][used] - r["confidence"][used])
    return float(np.sum(r["count"][used] * gaps) / n)


def nll(z: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the truth under sigmoid(z/T) (numerically stable)."""
    s, t = _as_arrays(z, y)
    signed = np.where(t == 1, s, -s) / temperature
    return float(-np.mean(log_expit(signed)))


def fit_temperature(z: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = TEMPERATURE_BOUNDS) -> float:
    """Temperature minimizing the NLL, searched on log T so the scale is symmetric."""
    s, t = _as_arrays(z, y)
    if s.size == 0 or t.min() == t.max():
        raise ValueError("temperature scaling needs both classes among the labelled scores")
    res = minimize_scalar(
        lambda log_t: nll(s, t, float(np.exp(log_t))),
        bounds=(np.log(bounds[0]), np.log(bounds[1])),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(np.exp(res.x))


def judge_temperature(
    z: np.ndarray, y: np.ndarray, t_old: float, t_new: float
) -> tuple[dict[str, float], tuple[str, ...]]:
    """ECE and NLL before and after, and the warnings a person must read (ECE worse, T at the search
    bound). A T that does not lower the NLL is Rejected: fitting found nothing to store."""
    z, y = _as_arrays(z, y)
    figures = {
        "ece_before": ece(probability(z, t_old), y),
        "ece_after": ece(probability(z, t_new), y),
        "nll_before": nll(z, y, t_old),
        "nll_after": nll(z, y, t_new),
    }
    if not figures["nll_after"] < figures["nll_before"] - NLL_GAIN:
        raise Rejected(
            f"the fitted temperature {t_new:.4f} does not lower the NLL ({figures['nll_before']:.6f} -> "
            f"{figures['nll_after']:.6f}) on {y.size} validation scores; nothing written (T stays {t_old:g})"
        )
    warnings = []
    if figures["ece_after"] > figures["ece_before"]:
        warnings.append(
            f"ECE gets worse ({figures['ece_before']:.4f} -> {figures['ece_after']:.4f}) although the NLL "
            f"is lower: {y.size} validation scores may be too few for {N_BINS} ECE bins"
        )
    lo, hi = TEMPERATURE_BOUNDS
    if not lo * 1.001 < t_new < hi / 1.001:
        warnings.append(f"temperature {t_new:.4f} is at the search bound [{lo:g}, {hi:g}]: check the AUC")
    return figures, tuple(warnings)


# ------------------------------------------------------------------------------------------- ranking
def roc_auc(scores: np.ndarray, y: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count one half)."""
    s, t = _as_arrays(scores, y)
    n_pos, n_neg = int(t.sum()), int((1 - t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[t == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


# ------------------------------------------------------------------------------------------ thresholds
def confusion(y: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """2x2 matrix, rows = truth, columns = prediction, order (wrong, correct)."""
    return confusion_matrix(y, pred, 2)


def threshold_sweep(z: np.ndarray, y: np.ndarray) -> dict:
    """Every distinct decision on ``z >= cut``: per-class precision/recall/F1 and macro F1.

    Cuts sit midway between consecutive distinct logits (and beyond both ends), so a chosen cut
    does not lie on a training score.
    """
    s, t = _as_arrays(z, y)
    u = np.unique(s)
    if u.size == 0:
        raise ValueError("no scores to sweep")
    cuts = np.r_[u[0] - 1.0, (u[:-1] + u[1:]) / 2.0, u[-1] + 1.0]
    # predicted wrong = z < cut; counts via searchsorted on the sorted scores of each class
    z_pos, z_neg = np.sort(s[t == 1]), np.sort(s[t == 0])
    correct_as_wrong = np.searchsorted(z_pos, cuts, side="left")  # FN of correct / FP of wrong
    wrong_as_wrong = np.searchsorted(z_neg, cuts, side="left")  # TP of wrong
    n_pos, n_neg = z_pos.size, z_neg.size
    tp_c = n_pos - correct_as_wrong
    fp_c = n_neg - wrong_as_wrong
    tp_w, fp_w, fn_w = wrong_as_wrong, correct_as_wrong, n_neg - wrong_as_wrong
    f1_c = f1(tp_c, fp_c, correct_as_wrong)
    f1_w = f1(tp_w, fp_w, fn_w)
    return {
        "cut": cuts,
        "f1_correct": f1_c,
        "f1_wrong": f1_w,
        "macro_f1": (f1_c + f1_w) / 2.0,
        "recall_wrong": tp_w / n_neg if n_neg else np.full(cuts.shape, np.nan),
        "precision_wrong": np.where(tp_w + fp_w > 0, tp_w / np.maximum(tp_w + fp_w, 1), 0.0),
        "recall_correct": tp_c / n_pos if n_pos else np.full(cuts.shape, np.nan),
    }


@dataclass(frozen=True)
class Operating:
    """One decision cut with its metrics; ``thr`` is in P(correct) space at ``temperature``."""

    name: str
    cut: float
    thr: float
    temperature: float
    macro_f1: float
    f1_wrong: float
    f1_correct: float
    recall_wrong: float
    confusion: list[list[int]]

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _operating(name: str, sweep: dict, i: int, z: np.ndarray, y: np.ndarray, temperature: float) -> Operating:
    cut = float(sweep["cut"][i])
    return Operating(
        name=name,
        cut=cut,
        thr=logit_to_threshold(cut, temperature),
        temperature=temperature,
        macro_f1=float(sweep["macro_f1"][i]),
        f1_wrong=float(sweep["f1_wrong"][i]),
        f1_correct=float(sweep["f1_correct"][i]),
        recall_wrong=float(sweep["recall_wrong"][i]),
        confusion=confusion(y, z >= cut).tolist(),
    )


def choose_thresholds(
    z: np.ndarray,
    y: np.ndarray,
    temperature: float = 1.0,
    required_recall_wrong: float = 0.95,
    current_thr: float | None = None,
) -> dict[str, Operating]:
    """Operating points: max macro F1; the lowest cut whose recall of ``wrong`` meets the requirement
    (it keeps the most ``correct`` calls, hence the best precision of ``wrong``); and the current one."""
    s, t = _as_arrays(z, y)
    sw = threshold_sweep(s, t)
    out = {"max_macro_f1": _operating("max_macro_f1", sw, int(np.argmax(sw["macro_f1"])), s, t, temperature)}
    meets = np.flatnonzero(sw["recall_wrong"] >= required_recall_wrong)
    if meets.size:
        out["recall_wrong"] = _operating(
            f"recall_wrong>={required_recall_wrong:g}", sw, int(meets[0]), s, t, temperature
        )
    if current_thr is not None:
        cut = threshold_to_logit(current_thr, temperature)
        pred = s >= cut
        cm = confusion(t, pred)
        f1_w = float(f1(cm[0, 0], cm[1, 0], cm[0, 1]))
        f1_c = float(f1(cm[1, 1], cm[0, 1], cm[1, 0]))
        rec_w = float(cm[0, 0] / cm[0].sum()) if cm[0].sum() else float("nan")
        out["current"] = Operating(
            "current", cut, float(current_thr), temperature, (f1_w + f1_c) / 2, f1_w, f1_c, rec_w, cm.tolist()
        )
    return out


def _curve(d: dict, max_points: int = 501) -> dict:
    """JSON lists; long curves thinned to ``max_points`` evenly spaced rows (ends kept) for the report."""

    def thin(v: np.ndarray) -> list:
        if v.size <= max_points:
            return v.tolist()
        return v[np.unique(np.linspace(0, v.size - 1, max_points).round().astype(int))].tolist()

    return {k: (thin(v) if isinstance(v, np.ndarray) else v) for k, v in d.items()}


def analyse(
    z: np.ndarray,
    y: np.ndarray,
    temperature: float = 1.0,
    thr: float | None = None,
    required_recall_wrong: float = 0.95,
    n_bins: int = N_BINS,
    values: tuple[str, str] = CLASSES,
) -> Calibration:
    """The calibration + ranking + threshold block of a report.

    ``temperature``/``thr`` are those the function ran with (from the log); the fitted temperature and
    every operating point are reported in the fitted probability space, with the current ``thr``
    re-expressed there too.
    """
    s, t = _as_arrays(z, y)
    p_now = probability(s, temperature)
    out: dict = {
        "n": int(s.size),
        "n_correct": int(t.sum()),
        "n_wrong": int((1 - t).sum()),
        "ece_kind": "top-label",
        "n_bins": n_bins,
        "temperature": float(temperature),
        "thr": thr,
        "ece": ece(p_now, t, n_bins),
        "nll": nll(s, t, temperature),
        "reliability": _curve(reliability(p_now, t, n_bins)),
    }
    both = 0 < t.sum() < t.size
    out["roc_auc"] = roc_auc(s, t) if both else None
    out["pr"] = (
        {values[1]: _curve(pr_curve(p_now, t)), values[0]: _curve(pr_curve(1.0 - p_now, 1 - t))}
        if both
        else None
    )
    if not both:
        out["fitted"] = None
        return Calibration.model_validate(plain(out))
    t_fit = fit_temperature(s, t)
    p_fit = probability(s, t_fit)
    ops = choose_thresholds(
        s,
        t,
        t_fit,
        required_recall_wrong,
        reexpress_threshold(thr, temperature, t_fit) if thr is not None else None,
    )
    out["fitted"] = {
        "temperature": t_fit,
        "ece": ece(p_fit, t, n_bins),
        "nll": nll(s, t, t_fit),
        "reliability": _curve(reliability(p_fit, t, n_bins)),
        "required_recall_wrong": required_recall_wrong,
        "operating_points": {k: v.as_dict() for k, v in ops.items()},
        "sweep": _curve(threshold_sweep(s, t)),
    }
    return Calibration.model_validate(plain(out))
