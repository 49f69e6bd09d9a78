"""Judging model versions on the same persons: binary metrics, a frame-clustered bootstrap and McNemar.

A version is its P(correct) per reference person and its thr (``correct`` iff P >= thr, the rule of
:mod:`ropewatch_core.decision`). Everything here is numpy/scipy over plain arrays, so the backtest,
the card and the promotion gate share one implementation.

- :func:`binary_metrics`: per-class P/R/F1/support, accuracy, confusion, AP (positive class
  ``correct``, score P(correct); equal to sklearn's ``average_precision_score``), TP/FP/FN/TN of
  ``correct`` and flips per 1,000 persons (truth ``wrong`` predicted ``correct``: the dangerous error).
- :func:`clustered_bootstrap`: persons in one frame share light, camera and annotator, so they are not
  independent; the bootstrap resamples FRAMES with replacement (seeded) and gives percentile CIs.
- :func:`compare_pair`: McNemar's exact test on right/wrong per person, and the paired bootstrap CI of
  each difference b − a (both versions scored on the same resamples).

Metric names are the alert rules' dotted paths: ``per_class.<value>.f1``, ``accuracy``, ``ap``,
``flips_per_1000`` (:data:`CI_METRICS`); their good direction is :func:`good_direction`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binomtest

from ropewatch_core.decision import CORRECT, WRONG
from ropewatch_core.errors import InputError
from ropewatch_validator.evaluation.metrics import confusion_matrix, pr_curve, prf, ratio

VALUES = (WRONG, CORRECT)
Frames = Sequence[object] | np.ndarray  # one frame key (the cluster) per person
N_BOOT, SEED, LEVEL = 2000, 0, 0.95
CHUNK = 4_000_000  # person weights held at once by the bootstrap (32 MB of float64)
_PRF = ("precision", "recall", "f1")
CI_METRICS = (*(f"per_class.{v}.{m}" for v in VALUES for m in _PRF), "accuracy", "ap", "flips_per_1000")


def good_direction(path: str) -> int | None:
    """+1 where more is better (precision, recall, F1, accuracy, AP, TP, TN), -1 where fewer is better
    (flips, FP, FN), None where a metric has no good direction (thr, support)."""
    leaf = path.rsplit(".", 1)[-1]
    if leaf in ("thr", "support"):
        return None
    return -1 if leaf in ("fp", "fn") or leaf.startswith("flips") else 1


BETTER, WORSE, UNCLEAR = "better", "worse", "no significant difference"


def verdict(path: str, low: float | None, high: float | None) -> str:
    """What the CI [low, high] of a difference (candidate − baseline) of metric ``path`` says: better or
    worse only when it excludes 0 on that side of the metric's good direction, else no significant
    difference (also without a CI, or for a metric with no good direction)."""
    good = good_direction(path)
    if good is None or low is None or high is None:
        return UNCLEAR
    if low > 0 or high < 0:
        return BETTER if (low > 0) == (good > 0) else WORSE
    return UNCLEAR


@dataclass(frozen=True)
class ClassStats:
    precision: float | None
    recall: float | None
    f1: float | None
    support: int


@dataclass(frozen=True)
class BinaryMetrics:
    """One version on one set of persons. ``confusion``: rows = truth, columns = prediction, order
    ``values``; tp/fp/fn/tn are those of the positive class ``correct``."""

    values: tuple[str, ...]
    per_class: dict[str, ClassStats]
    accuracy: float | None
    confusion: tuple[tuple[int, ...], ...]
    ap: float | None
    thr: float
    tp: int
    fp: int
    fn: int
    tn: int
    flips_per_1000: float | None
    n: int

    def metric(self, path: str) -> float | None:
        """A number by metric path (``per_class.wrong.f1``, ``accuracy``, ``tp``...); None if undefined."""
        return metric_at(self, self.values, path)


def metric_paths(values: Sequence[str] = VALUES) -> list[str]:
    """Every metric path of :class:`BinaryMetrics`."""
    per_class = [f"per_class.{v}.{m}" for v in values for m in ("precision", "recall", "f1", "support")]
    return [*per_class, "accuracy", "ap", "thr", "tp", "fp", "fn", "tn", "flips_per_1000"]


def metric_at(metrics: Any, values: Sequence[str], path: str) -> float | None:
    """The number at a metric path of a metrics object with ``per_class`` (BinaryMetrics, and the
    backtest.json model's VersionMetrics); None where undefined, InputError for an unknown path."""
    known = metric_paths(values)
    if path not in known:
        raise InputError(f"unknown metric {path!r} (known: {', '.join(known)})")
    parts = path.split(".")
    value = getattr(metrics.per_class[parts[1]], parts[2]) if len(parts) == 3 else getattr(metrics, path)
    return None if value is None else float(value)


def _indices(truth: Sequence[str], values: Sequence[str]) -> np.ndarray:
    if WRONG not in values or CORRECT not in values:
        raise InputError(f"values {list(values)} must name both {WRONG!r} and {CORRECT!r}")
    index = {v: i for i, v in enumerate(values)}
    odd = sorted({t for t in truth if t not in index})
    if odd:
        raise InputError(f"truth values {odd} are not in {list(values)}")
    return np.fromiter((index[t] for t in truth), dtype=np.int64, count=len(truth))


def _scores(p: np.ndarray, n: int) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64).reshape(-1)
    if p.size != n:
        raise InputError(f"{p.size} scores for {n} persons")
    if not np.all(np.isfinite(p)):
        raise InputError(f"{int(np.sum(~np.isfinite(p)))} scores are not finite numbers")
    return p


def binary_metrics(
    truth: Sequence[str], p_correct: np.ndarray, thr: float, values: Sequence[str] = VALUES
) -> BinaryMetrics:
    """The metrics of one version: prediction ``correct`` iff ``p_correct >= thr``."""
    t = _indices(truth, values)
    p = _scores(p_correct, t.size)
    pred = np.where(p >= thr, values.index(CORRECT), values.index(WRONG))
    cm = confusion_matrix(t, pred, len(values))
    per_class = {}
    for i, v in enumerate(values):
        tp_v, fp_v, fn_v = int(cm[i, i]), int(cm[:, i].sum() - cm[i, i]), int(cm[i, :].sum() - cm[i, i])
        per_class[v] = ClassStats(*prf(tp_v, fp_v, fn_v), support=int(cm[i, :].sum()))
    c, w = values.index(CORRECT), values.index(WRONG)
    positive = t == c
    ap = pr_curve(p, positive)["ap"] if positive.any() else None
    return BinaryMetrics(
        values=tuple(values),
        per_class=per_class,
        accuracy=ratio(np.trace(cm), t.size),
        confusion=tuple(tuple(int(x) for x in row) for row in cm),
        ap=ap,
        thr=float(thr),
        tp=int(cm[c, c]),
        fp=int(cm[:, c].sum() - cm[c, c]),
        fn=int(cm[c, :].sum() - cm[c, c]),
        tn=int(cm[w, w]),
        flips_per_1000=None if not t.size else float(cm[w, c]) / t.size * 1000.0,
        n=int(t.size),
    )


# -- the frame-clustered bootstrap -----------------------------------------------------------------


@dataclass(frozen=True)
class Interval:
    low: float | None
    high: float | None


def frame_ids(frames: Frames) -> np.ndarray:
    """Dense cluster ids 0..k-1 for any frame keys (ints, names)."""
    return np.unique(np.asarray(frames), return_inverse=True)[1].reshape(-1)


def resample_frames(n_frames: int, n_boot: int = N_BOOT, seed: int = SEED) -> np.ndarray:
    """The resamples: ``n_boot`` rows of ``n_frames`` frame ids drawn with replacement (seeded)."""
    if n_frames < 1 or n_boot < 1:
        raise InputError(f"a bootstrap needs frames and resamples (got {n_frames} and {n_boot})")
    return np.random.default_rng(seed).integers(0, n_frames, size=(n_boot, n_frames))


def _weights(draws: np.ndarray, cluster: np.ndarray, n_frames: int) -> np.ndarray:
    """Per resample and person: how often the person's frame was drawn (B × persons)."""
    b = draws.shape[0]
    counts = np.bincount((draws + np.arange(b)[:, None] * n_frames).ravel(), minlength=b * n_frames)
    return counts.reshape(b, n_frames)[:, cluster].astype(np.float64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _weighted_ap(weights: np.ndarray, scores: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """Step-wise AP (ties enter together, as ``metrics.pr_curve``) of every weighted resample."""
    order = np.argsort(-scores, kind="mergesort")
    s, w = scores[order], weights[:, order]
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]
    tp = np.cumsum(w * positive[order], axis=1)[:, last]
    seen = np.cumsum(w, axis=1)[:, last]
    n_pos = tp[:, -1:]
    recall = _safe_div(tp, np.broadcast_to(n_pos, tp.shape))
    precision = np.nan_to_num(_safe_div(tp, seen))
    delta = np.diff(np.concatenate([np.zeros((w.shape[0], 1)), recall], axis=1), axis=1)
    return np.where(n_pos[:, 0] > 0, np.sum(np.nan_to_num(delta) * precision, axis=1), np.nan)


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall and F1 per resample; NaN where undefined (F1 where P or R is, as ``metrics.prf``)."""
    p, r = _safe_div(tp, tp + fp), _safe_div(tp, tp + fn)
    return p, r, np.where(np.isnan(p) | np.isnan(r), np.nan, _safe_div(2 * tp, 2 * tp + fp + fn))


def resampled_metrics(
    truth: Sequence[str], frames: Frames, p_correct: np.ndarray, thr: float, draws: np.ndarray
) -> dict[str, np.ndarray]:
    """Each :data:`CI_METRICS` metric on every resample of ``draws`` (rows of frame ids of
    :func:`frame_ids` order), as if the persons of the drawn frames were concatenated."""
    t = _indices(truth, VALUES)
    p = _scores(p_correct, t.size)
    cluster = frame_ids(frames)
    if cluster.size != t.size:
        raise InputError(f"{cluster.size} frames for {t.size} persons")
    n_frames = int(cluster.max()) + 1 if cluster.size else 0
    rows = max(1, CHUNK // max(t.size, 1))  # resamples per block: B × persons weights stay small
    blocks = [
        _block(_weights(draws[i : i + rows], cluster, n_frames), t == 1, p, thr)
        for i in range(0, len(draws), rows)
    ]
    return {k: np.concatenate([b[k] for b in blocks]) for k in CI_METRICS}


def _block(w: np.ndarray, is_c: np.ndarray, p: np.ndarray, thr: float) -> dict[str, np.ndarray]:
    """The metrics of a block of resamples, given as person weights (resamples × persons)."""
    said_c = p >= thr
    tp, fp = w @ (is_c & said_c), w @ (~is_c & said_c)
    fn, tn = w @ (is_c & ~said_c), w @ (~is_c & ~said_c)
    n = tp + fp + fn + tn
    per_class = {WRONG: _prf(tn, fn, fp), CORRECT: _prf(tp, fp, fn)}
    return {
        **{f"per_class.{v}.{m}": per_class[v][i] for v in VALUES for i, m in enumerate(_PRF)},
        "accuracy": _safe_div(tp + tn, n),
        "ap": _weighted_ap(w, p, is_c.astype(np.float64)),
        "flips_per_1000": _safe_div(fp, n) * 1000.0,
    }


def percentile_ci(samples: np.ndarray, level: float = LEVEL) -> Interval:
    """Percentile interval of the defined resamples (None when none is defined)."""
    x = np.asarray(samples, dtype=np.float64)
    x = x[np.isfinite(x)]
    if not x.size:
        return Interval(None, None)
    lo, hi = np.percentile(x, [50 * (1 - level), 50 * (1 + level)])
    return Interval(float(lo), float(hi))


def clustered_bootstrap(
    truth: Sequence[str],
    frames: Frames,
    p_correct: np.ndarray,
    thr: float,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    level: float = LEVEL,
) -> dict[str, Interval]:
    """Percentile CIs of :data:`CI_METRICS` from ``n_boot`` resamples of frames (with replacement)."""
    draws = resample_frames(len(np.unique(np.asarray(frames))), n_boot, seed)
    stats = resampled_metrics(truth, frames, p_correct, thr, draws)
    return {k: percentile_ci(v, level) for k, v in stats.items()}


# -- a pair of versions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Diff:
    """b − a on the full data, and its paired bootstrap CI."""

    estimate: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class PairComparison:
    mcnemar_p: float
    a_right_b_wrong: int
    a_wrong_b_right: int
    diffs: dict[str, Diff]

    @property
    def n_discordant(self) -> int:
        return self.a_right_b_wrong + self.a_wrong_b_right


def mcnemar_exact(a_right: np.ndarray, b_right: np.ndarray) -> tuple[float, int, int]:
    """Exact McNemar p (two-sided binomial test of the discordant persons at 1/2), and the two
    discordant counts (a right & b wrong, a wrong & b right). No discordant person: p = 1."""
    a, b = np.asarray(a_right, bool), np.asarray(b_right, bool)
    n10, n01 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    p = binomtest(min(n10, n01), n10 + n01, 0.5).pvalue if n10 + n01 else 1.0
    return float(p), n10, n01


def compare_pair(
    truth: Sequence[str],
    frames: Frames,
    p_a: np.ndarray,
    thr_a: float,
    p_b: np.ndarray,
    thr_b: float,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    level: float = LEVEL,
) -> PairComparison:
    """Baseline ``a`` against candidate ``b`` on the same persons (b − a, paired resamples)."""
    ma, mb = binary_metrics(truth, p_a, thr_a), binary_metrics(truth, p_b, thr_b)
    t = _indices(truth, VALUES) == 1
    p, n10, n01 = mcnemar_exact((_scores(p_a, t.size) >= thr_a) == t, (_scores(p_b, t.size) >= thr_b) == t)
    draws = resample_frames(len(np.unique(np.asarray(frames))), n_boot, seed)
    sa = resampled_metrics(truth, frames, p_a, thr_a, draws)
    sb = resampled_metrics(truth, frames, p_b, thr_b, draws)
    diffs = {}
    for key in CI_METRICS:
        va, vb = ma.metric(key), mb.metric(key)
        ci = percentile_ci(sb[key] - sa[key], level)
        diffs[key] = Diff(None if va is None or vb is None else vb - va, ci.low, ci.high)
    return PairComparison(mcnemar_p=p, a_right_b_wrong=n10, a_wrong_b_right=n01, diffs=diffs)
