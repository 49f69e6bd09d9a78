"""The cascade rule and its band, numpy only (the function routes with it, the validator tunes with it).

With the fast filter's calibrated P(correct) = p and the band [lo, hi]: p >= hi → ``correct`` by the
filter, p <= lo → ``wrong`` by the filter (hi is checked first, so lo == hi decides everyone), anything
strictly between is deferred to the expert. A frame skips the expert when none of its persons is
deferred.

:func:`tune_band` picks the band on validation data: the largest share of frames that skip the expert,
subject to (a) the cascade's decisions agreeing with the expert's on at least ``target`` of the persons
and (b) the cascade's recall of ``wrong`` (against the reference) being at least the expert's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ropewatch_core.decision import CORRECT, WRONG
from ropewatch_core.errors import Rejected

FILTER, EXPERT = "filter", "expert"  # the ``stage`` a log record names for each person


def deferred(p: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """True where the filter is unsure: lo < p < hi (and not p >= hi)."""
    p = np.asarray(p, dtype=np.float64)
    lo, hi = band
    return (p < hi) & (p > lo)


def filter_values(p: np.ndarray, band: tuple[float, float]) -> list[str | None]:
    """The filter's decision per person, None where deferred."""
    p = np.asarray(p, dtype=np.float64)
    return [CORRECT if pi >= band[1] else WRONG if pi <= band[0] else None for pi in p]


def cascade_correct(p: np.ndarray, expert_correct: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    """Final decision (True = correct) given the filter's P and the expert's decision for every person."""
    p = np.asarray(p, dtype=np.float64)
    return np.where(p >= band[1], True, np.where(p <= band[0], False, np.asarray(expert_correct, bool)))


class NoFeasibleBand(Rejected):
    """No band meets the agreement and recall targets on the validation persons: nothing may be stored."""


@dataclass(frozen=True)
class BandChoice:
    lo: float
    hi: float
    frame_skip: float  # share of frames with no deferred person
    person_filter_share: float  # share of persons the filter decides
    agreement: float  # share of persons where the cascade decides as the expert does
    recall_wrong: float  # the cascade's recall of ``wrong`` against the reference
    expert_recall_wrong: float
    n_persons: int
    n_frames: int

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def _recall_wrong(pred_correct: np.ndarray, y: np.ndarray) -> float:
    wrong = y == 0
    return float((~pred_correct[wrong]).mean()) if wrong.any() else float("nan")


def evaluate_band(
    p: np.ndarray, expert_correct: np.ndarray, y: np.ndarray, frame: np.ndarray, band: tuple[float, float]
) -> BandChoice:
    """The figures of one band on labelled persons (``y`` 1 = correct) grouped by ``frame``."""
    p, e = np.asarray(p, np.float64), np.asarray(expert_correct, bool)
    y, frame = np.asarray(y, np.int64), np.asarray(frame)
    d = deferred(p, band)
    _, inv = np.unique(frame, return_inverse=True)
    frame_deferred = np.bincount(inv, weights=d.astype(float)) > 0
    final = cascade_correct(p, e, band)
    return BandChoice(
        lo=float(band[0]),
        hi=float(band[1]),
        frame_skip=float(1.0 - frame_deferred.mean()) if len(frame_deferred) else 0.0,
        person_filter_share=float(1.0 - d.mean()) if len(d) else 0.0,
        agreement=float((final == e).mean()) if len(e) else 1.0,
        recall_wrong=_recall_wrong(final, y),
        expert_recall_wrong=_recall_wrong(e, y),
        n_persons=int(len(p)),
        n_frames=int(len(frame_deferred)),
    )


def tune_band(
    p: np.ndarray,
    expert_correct: np.ndarray,
    y: np.ndarray,
    frame: np.ndarray,
    target: float = 0.99,
    n_candidates: int = 201,
) -> BandChoice:
    """The band with the largest frame-skip share meeting both constraints (ties: the most persons
    decided by the filter, then the widest band). Candidate edges are 0, 1 and every distinct p (exact:
    any other edge decides like the nearest data value), or ``n_candidates`` quantiles of p when there
    are more. When none qualifies (not even (0, 1), where the filter decides only P of exactly 0 or 1),
    NoFeasibleBand says by how much the widest band misses: a band that fails its targets is never
    returned."""
    p = np.asarray(p, np.float64)
    edges = np.unique(np.r_[0.0, 1.0, p])
    if len(edges) > n_candidates:
        edges = np.unique(np.r_[0.0, 1.0, np.quantile(p, np.linspace(0, 1, n_candidates))])
    best: BandChoice | None = None
    for i, lo in enumerate(edges):
        for hi in edges[i:]:
            c = evaluate_band(p, expert_correct, y, frame, (float(lo), float(hi)))
            recall_ok = np.isnan(c.expert_recall_wrong) or c.recall_wrong >= c.expert_recall_wrong - 1e-12
            if c.agreement < target or not recall_ok:
                continue
            key = (c.frame_skip, c.person_filter_share, c.hi - c.lo)
            if best is None or key > (best.frame_skip, best.person_filter_share, best.hi - best.lo):
                best = c
    if best is None:  # (0, 1) was a candidate: it defers every 0 < p < 1, and still fails
        w = evaluate_band(p, expert_correct, y, frame, (0.0, 1.0))
        raise NoFeasibleBand(
            f"no band meets the targets (agreement with the expert >= {target:.2%}, recall(wrong) >= the "
            f"expert's {w.expert_recall_wrong:.4f}); even [0, 1] gives agreement {w.agreement:.2%} and "
            f"recall(wrong) {w.recall_wrong:.4f}: nothing written"
        )
    return best
