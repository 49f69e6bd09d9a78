"""Split a job's boxes into predictions and reference, and match them frame by frame.

Matching is optimal per frame: ``scipy.optimize.linear_sum_assignment`` on 1 − IoU, where pairs
below the IoU threshold cost more than any valid assignment, so the number of valid matches is
maximal first and their total IoU second; pairs under the threshold are then dropped. This is the
rule of CVAT's quality control (which defaults to IoU 0.4); scores play no part, unlike COCOeval's
greedy by-score matching.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from ropewatch_core.spec import ATTRIBUTE, ATTRIBUTE_VALUES, PERSON_LABEL
from ropewatch_validator.evaluation.metrics import groups

_FAR = 1e9  # cost of a forbidden pair: above any sum of allowed costs in one frame


def optimal_pairs(cost: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost assignment over the ``allowed`` pairs only (Hungarian, scipy); rows, columns.

    Forbidden pairs cost more than any assignment of allowed ones, so the number of allowed pairs is
    maximal first and their total cost minimal second; forbidden pairs the solver had to use are dropped.
    The one thresholded assignment: matching (IoU ≥ threshold) and the log join (box distance ≤ tol).
    """
    if cost.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    rows, cols = linear_sum_assignment(np.where(allowed, cost, _FAR))
    ok = allowed[rows, cols]
    return rows[ok], cols[ok]


@dataclass(frozen=True)
class Settings:
    """What is compared and how; every field lands in report.json's ``settings``."""

    iou: float = 0.5
    low_iou: float = 0.1  # below this an unmatched prediction is background, above it a localization error
    label: str = PERSON_LABEL
    attribute: str = ATTRIBUTE
    values: tuple[str, ...] = ATTRIBUTE_VALUES
    pred_sources: tuple[str, ...] = ("auto", "semi-auto")
    ref_sources: tuple[str, ...] = ("manual", "file", "consensus")
    edited_sources: tuple[str, ...] = ("semi-auto",)
    top_k: int = 10
    extra: dict = field(default_factory=dict, compare=False)


def select(
    shapes: pd.DataFrame, settings: Settings, sources: tuple[str, ...], frames: np.ndarray | None = None
) -> pd.DataFrame:
    """Rectangles of the label under test from ``sources`` (optionally only on ``frames``), by frame."""
    keep = (
        (shapes["label"] == settings.label) & (shapes["type"] == "rectangle") & shapes["source"].isin(sources)
    )
    if frames is not None:
        keep &= shapes["frame"].isin(frames)
    out = shapes.loc[keep].copy()
    if settings.attribute not in out:
        out[settings.attribute] = None
    return out.sort_values("frame", kind="stable").reset_index(drop=True)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (n×4, x1y1x2y2) with every box in ``b`` (m×4)."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match(pred: pd.DataFrame, ref: pd.DataFrame, iou: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add matching columns to frame-sorted ``pred`` and ``ref``.

    ``match`` is the row of the partner in the other table (-1 if none), ``iou`` the pair's IoU,
    ``best_iou`` / ``best`` the highest IoU with any object of the other table on the frame and
    that object's row (what the error taxonomy needs for unmatched objects).
    """
    pb = pred[["x1", "y1", "x2", "y2"]].to_numpy(float)
    rb = ref[["x1", "y1", "x2", "y2"]].to_numpy(float)
    cols = {
        name: np.full(n, fill, dtype)
        for name, n, fill, dtype in [
            ("p_match", len(pred), -1, np.int64),
            ("p_iou", len(pred), 0.0, float),
            ("p_best", len(pred), -1, np.int64),
            ("p_best_iou", len(pred), 0.0, float),
            ("r_match", len(ref), -1, np.int64),
            ("r_iou", len(ref), 0.0, float),
            ("r_best", len(ref), -1, np.int64),
            ("r_best_iou", len(ref), 0.0, float),
        ]
    }
    ref_rows = groups(ref["frame"].to_numpy())
    for frame, p_idx in groups(pred["frame"].to_numpy()).items():
        r_idx = ref_rows.get(frame)
        if r_idx is None:
            continue
        m = iou_matrix(pb[p_idx], rb[r_idx])
        cols["p_best"][p_idx] = r_idx[m.argmax(1)]
        cols["p_best_iou"][p_idx] = m.max(1)
        cols["r_best"][r_idx] = p_idx[m.argmax(0)]
        cols["r_best_iou"][r_idx] = m.max(0)
        rows, cs = optimal_pairs(1.0 - m, m >= iou)
        cols["p_match"][p_idx[rows]] = r_idx[cs]
        cols["r_match"][r_idx[cs]] = p_idx[rows]
        cols["p_iou"][p_idx[rows]] = cols["r_iou"][r_idx[cs]] = m[rows, cs]
    pred = pred.assign(
        match=cols["p_match"], iou=cols["p_iou"], best=cols["p_best"], best_iou=cols["p_best_iou"]
    )
    ref = ref.assign(
        match=cols["r_match"], iou=cols["r_iou"], best=cols["r_best"], best_iou=cols["r_best_iou"]
    )
    return pred, ref
