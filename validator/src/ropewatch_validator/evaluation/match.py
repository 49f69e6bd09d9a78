"""Split a job's boxes into predictions and reference, and match them frame by frame.

Two matching rules, both optimal per frame (``scipy.optimize.linear_sum_assignment``), scores play no
part (unlike COCOeval's greedy by-score matching):

- ``count`` (default): pairs below the IoU threshold are forbidden, so the number of matches is maximal
  first and their total IoU second;
- ``cvat``: CVAT 2.23's quality control (``quality_reports.py`` ``_match_segments``): a pair below the
  threshold costs 1, the same as leaving both unmatched, so the total IoU of the matches is maximal; in a
  crowded frame it can make fewer matches than ``count``.

IoU is CVAT's: rectangles with equal rotation compare as axis-aligned boxes (rotation ignored), with
different rotations as polygons rasterized at the image size (``_DistanceComparator.match_boxes``).
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from ropewatch_validator.evaluation.metrics import groups
from ropewatch_validator.evaluation.model import Settings

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
    if "rotation" not in out:
        out["rotation"] = 0.0
    return out.sort_values("frame", kind="stable").reset_index(drop=True)


def other_labels(shapes: pd.DataFrame, settings: Settings, frames: np.ndarray | None = None) -> Counter:
    """Rectangles of other labels on the evaluated frames, as ``label:<name>`` counts."""
    keep = (shapes["label"] != settings.label) & (shapes["type"] == "rectangle")
    if frames is not None:
        keep &= shapes["frame"].isin(frames)
    return Counter({f"label:{k}": int(v) for k, v in shapes.loc[keep, "label"].value_counts().items()})


def pair_frames(frames: pd.DataFrame, ref_frames: pd.DataFrame, *, by_real_frame: bool) -> pd.DataFrame:
    """``frame`` of the job -> ``ref_frame`` of the reference job, live frames of both only.

    CVAT pairs a job's frame with a Ground Truth frame through the dataset item name; a honeypot frame of
    a ``gt_pool`` task shows (and is named like) its validation frame ``real_frame``. ``by_real_frame``
    (GT mode) pairs ``real_frame`` with the GT frame, else frame numbers are paired; names must agree.
    """
    live = frames.loc[~frames["deleted"]]
    ref = ref_frames.loc[~ref_frames["deleted"], ["frame", "name"]].rename(columns={"frame": "ref_frame"})
    key = live["real_frame"] if by_real_frame else live["frame"]
    left = pd.DataFrame(
        {"frame": live["frame"].to_numpy(), "ref_frame": key.to_numpy(), "name": live["name"].to_numpy()}
    )
    return left.merge(ref, on=["ref_frame", "name"])[["frame", "ref_frame"]].sort_values(
        "frame", ignore_index=True
    )


def onto_job_frames(ref: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Reference rows moved to the job frames paired with their frame (one GT frame may back several)."""
    moved = ref.rename(columns={"frame": "ref_frame"}).merge(pairs, on="ref_frame")
    return moved.drop(columns="ref_frame").sort_values("frame", kind="stable", ignore_index=True)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (n×4, x1y1x2y2) with every box in ``b`` (m×4)."""
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _polygon(box: np.ndarray, degrees: float) -> list[float]:
    """Corners of a rectangle turned about its centre, rounded to 2 decimals as datumaro stores them."""
    x1, y1, x2, y2 = box
    pts = np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]], float)
    if degrees:
        a = math.radians(degrees)
        centre = (pts[0] + pts[2]) / 2
        pts = (pts - centre) @ np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]]) + centre
    return np.around(pts.flatten(), 2).tolist()


def rotated_iou(a: np.ndarray, b: np.ndarray, rot_a: float, rot_b: float, width: int, height: int) -> float:
    """CVAT's IoU of two rectangles with different rotations: both polygons rasterized at the image size
    (pycocotools RLE, so clipped to the image), mask IoU."""
    from pycocotools import mask

    ra = mask.frPyObjects([_polygon(a, rot_a)], height, width)
    rb = mask.frPyObjects([_polygon(b, rot_b)], height, width)
    return float(np.asarray(mask.iou(rb, ra, [0])).ravel()[0])


def cvat_iou(
    a: np.ndarray, b: np.ndarray, rot_a: np.ndarray, rot_b: np.ndarray, size: tuple[int, int]
) -> np.ndarray:
    """IoU matrix as CVAT computes it: axis-aligned for equal rotations, rasterized polygons otherwise."""
    m = iou_matrix(a, b)
    for i, j in zip(*np.nonzero(rot_a[:, None] != rot_b[None, :])):
        m[i, j] = rotated_iou(a[i], b[j], float(rot_a[i]), float(rot_b[j]), *size)
    return m


def cvat_pairs(m: np.ndarray, iou: float) -> tuple[np.ndarray, np.ndarray]:
    """CVAT's ``_match_segments``: square cost 1 − IoU padded with 1, costs above 1 − threshold set to 1."""
    n = max(m.shape)
    dist = np.ones((n, n))
    dist[: m.shape[0], : m.shape[1]] = 1 - m
    dist[dist > 1 - iou] = 1
    rows, cols = linear_sum_assignment(dist)
    ok = (rows < m.shape[0]) & (cols < m.shape[1])
    rows, cols = rows[ok], cols[ok]
    keep = ~((dist[rows, cols] > 1 - iou) | (dist[rows, cols] == 1))
    return rows[keep], cols[keep]


def match(
    pred: pd.DataFrame,
    ref: pd.DataFrame,
    iou: float = 0.5,
    *,
    rule: str = "count",
    sizes: dict[int, tuple[int, int]] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add matching columns to frame-sorted ``pred`` and ``ref``.

    ``rule`` is ``count`` or ``cvat`` (module doc); ``sizes`` (frame -> (width, height)) is needed only
    for pairs of different rotation, which CVAT rasterizes at the image size.

    ``match`` is the row of the partner in the other table (-1 if none), ``iou`` the pair's IoU,
    ``best_iou`` / ``best`` the highest IoU with any object of the other table on the frame and
    that object's row (what the error taxonomy needs for unmatched objects).
    """
    pb = pred[["x1", "y1", "x2", "y2"]].to_numpy(float)
    rb = ref[["x1", "y1", "x2", "y2"]].to_numpy(float)
    pr = pred["rotation"].to_numpy(float) if "rotation" in pred else np.zeros(len(pred))
    rr = ref["rotation"].to_numpy(float) if "rotation" in ref else np.zeros(len(ref))
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
        m = cvat_iou(pb[p_idx], rb[r_idx], pr[p_idx], rr[r_idx], (sizes or {}).get(frame, (0, 0)))
        cols["p_best"][p_idx] = r_idx[m.argmax(1)]
        cols["p_best_iou"][p_idx] = m.max(1)
        cols["r_best"][r_idx] = p_idx[m.argmax(0)]
        cols["r_best_iou"][r_idx] = m.max(0)
        rows, cs = cvat_pairs(m, iou) if rule == "cvat" else optimal_pairs(1.0 - m, m >= iou)
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
