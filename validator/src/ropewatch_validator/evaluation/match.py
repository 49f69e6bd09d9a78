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

_INVALID = 1e6


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


def select(shapes: pd.DataFrame, settings: Settings, sources: tuple[str, ...],
           frames: np.ndarray | None = None) -> pd.DataFrame:
    """Rectangles of the label under test from ``sources`` (optionally only on ``frames``), by frame."""
    keep = (shapes["label"] == settings.label) & (shapes["type"] == "rectangle") & shapes["source"].isin(sources)
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


def _spans(frames: np.ndarray) -> dict[int, tuple[int, int]]:
    """frame -> (start, stop) row range of a frame-sorted column."""
    uniq, start = np.unique(frames, return_index=True)
    stop = np.append(start[1:], len(frames))
    return dict(zip(uniq.tolist(), zip(start.tolist(), stop.tolist())))


def match(pred: pd.DataFrame, ref: pd.DataFrame, iou: float = 0.5) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add matching columns to frame-sorted ``pred`` and ``ref``.

    ``match`` is the row of the partner in the other table (-1 if none), ``iou`` the pair's IoU,
    ``best_iou`` / ``best`` the highest IoU with any object of the other table on the frame and
    that object's row (what the error taxonomy needs for unmatched objects).
    """
    pb = pred[["x1", "y1", "x2", "y2"]].to_numpy(float)
    rb = ref[["x1", "y1", "x2", "y2"]].to_numpy(float)
    cols = {name: np.full(n, fill, dtype) for name, n, fill, dtype in
            [("p_match", len(pred), -1, np.int64), ("p_iou", len(pred), 0.0, float),
             ("p_best", len(pred), -1, np.int64), ("p_best_iou", len(pred), 0.0, float),
             ("r_match", len(ref), -1, np.int64), ("r_iou", len(ref), 0.0, float),
             ("r_best", len(ref), -1, np.int64), ("r_best_iou", len(ref), 0.0, float)]}
    ref_spans = _spans(ref["frame"].to_numpy())
    for frame, (p0, p1) in _spans(pred["frame"].to_numpy()).items():
        if frame not in ref_spans:
            continue
        r0, r1 = ref_spans[frame]
        m = iou_matrix(pb[p0:p1], rb[r0:r1])
        cols["p_best"][p0:p1] = r0 + m.argmax(1)
        cols["p_best_iou"][p0:p1] = m.max(1)
        cols["r_best"][r0:r1] = p0 + m.argmax(0)
        cols["r_best_iou"][r0:r1] = m.max(0)
        rows, cs = linear_sum_assignment(np.where(m >= iou, 1.0 - m, _INVALID))
        ok = m[rows, cs] >= iou
        rows, cs = rows[ok], cs[ok]
        cols["p_match"][p0 + rows] = r0 + cs
        cols["r_match"][r0 + cs] = p0 + rows
        cols["p_iou"][p0 + rows] = cols["r_iou"][r0 + cs] = m[rows, cs]
    pred = pred.assign(match=cols["p_match"], iou=cols["p_iou"], best=cols["p_best"], best_iou=cols["p_best_iou"])
    ref = ref.assign(match=cols["r_match"], iou=cols["r_iou"], best=cols["r_best"], best_iou=cols["r_best_iou"])
    return pred, ref
