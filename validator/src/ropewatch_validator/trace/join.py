"""Join the function's log records to a job's frames and each auto shape to its logged detection.

CVAT tells the function nothing about task, job or frame, so the join key is the frame itself:
the sha256 of the bytes CVAT sent (the validator downloads the same bytes, see
``ropewatch_validator.cvat.frames``), with the sha256 of the decoded pixels as the fallback key for
frames whose bytes differ (e.g. a video frame re-encoded to PNG by another OpenCV build).

Re-runs: when several records carry one frame's key, the latest one at or before ``cutoff`` (the
job's auto-annotation time; by default the job's ``updated_date``, an upper bound: a record written
after the job last changed cannot have produced its shapes) is chosen. When every record is later
than the cutoff the earliest is used and flagged ``after_cutoff``. Both choices are counted.

Shapes: on each joined frame, ``auto`` shapes are matched to the chosen record's detections whose
box agrees within ``tol`` pixels on every coordinate (the function rounds boxes to 2 decimals),
optimally (Hungarian) when a frame has several; ``semi-auto`` shapes (geometry edited by a
person) are matched to the remaining detections by IoU >= ``edited_iou``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ropewatch_core.spec import ATTRIBUTE, ATTRIBUTE_VALUES
from ropewatch_validator.evaluation.match import iou_matrix, optimal_pairs
from ropewatch_validator.evaluation.metrics import groups
from ropewatch_validator.trace.logs import BOX


@dataclass
class FrameJoin:
    """One row per job frame: the chosen request and how it was found."""

    frames: pd.DataFrame  # frame, sha256, pixel_sha256, key, request_id, timestamp, candidates, after_cutoff
    stats: dict = field(default_factory=dict)


def join_frames(
    frames: pd.DataFrame, requests: pd.DataFrame, cutoff: pd.Timestamp | None = None
) -> FrameJoin:
    """Pick one inference request per frame (see module docstring for the rule)."""
    keys = {"sha256": object, "pixel_sha256": object}  # all-missing columns must still merge with strings
    base = frames[["frame", "sha256", "pixel_sha256"]].astype(keys)
    req = requests[["request_id", "timestamp", "sha256", "pixel_sha256"]].astype(keys)
    by_bytes = base.merge(  # a re-encoded frame's record has no byte hash (records.reencoded)
        req[["request_id", "timestamp", "sha256"]].dropna(subset=["sha256"]), on="sha256", how="inner"
    )
    by_bytes["key"] = "sha256"
    left = base[~base["frame"].isin(by_bytes["frame"])].dropna(subset=["pixel_sha256"])
    by_pixels = left.merge(
        req[["request_id", "timestamp", "pixel_sha256"]].dropna(subset=["pixel_sha256"]),
        on="pixel_sha256",
        how="inner",
    )
    by_pixels["key"] = "pixel_sha256"
    cand = pd.concat(
        [
            by_bytes[["frame", "request_id", "timestamp", "key"]],
            by_pixels[["frame", "request_id", "timestamp", "key"]],
        ],
        ignore_index=True,
    )
    if cutoff is not None:
        cand["after_cutoff"] = cand["timestamp"] > cutoff
    else:
        cand["after_cutoff"] = False
    counts = cand.groupby("frame").size().rename("candidates")
    # latest at/before the cutoff first; otherwise the earliest after it
    cand["rank_ts"] = np.where(
        cand["after_cutoff"], -cand["timestamp"].astype("int64"), cand["timestamp"].astype("int64")
    )
    chosen = (
        cand.sort_values(["after_cutoff", "rank_ts"], ascending=[True, False], kind="mergesort")
        .drop_duplicates("frame", keep="first")
        .drop(columns="rank_ts")
    )
    out = base.merge(chosen, on="frame", how="left").merge(counts, on="frame", how="left")
    out["candidates"] = out["candidates"].fillna(0).astype(int)
    out["after_cutoff"] = out["after_cutoff"].astype("boolean").fillna(False).astype(bool)
    joined = out["request_id"].notna()
    stats = {
        "frames": int(len(out)),
        "joined": int(joined.sum()),
        "by_sha256": int((out["key"] == "sha256").sum()),
        "by_pixel_sha256": int((out["key"] == "pixel_sha256").sum()),
        "unjoined": int((~joined).sum()),
        "unjoined_frames": out.loc[~joined, "frame"].astype(int).tolist(),
        "reruns": int((out["candidates"] > 1).sum()),
        "after_cutoff": int(out["after_cutoff"].sum()),
        "cutoff": None if cutoff is None else cutoff.isoformat(),
        "rule": "latest record at or before cutoff, else earliest after it (flagged)",
    }
    return FrameJoin(frames=out, stats=stats)


def _assign(cost: np.ndarray, limit: float) -> list[tuple[int, int]]:
    """Optimal pairs whose cost is within ``limit``."""
    rows, cols = optimal_pairs(cost, cost <= limit)
    return list(zip(rows.tolist(), cols.tolist()))


def match_frame(
    auto: np.ndarray, semi: np.ndarray, logged: np.ndarray, tol: float = 0.5, edited_iou: float = 0.5
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(auto index, detection index) pairs by max-abs box difference, then (semi index, detection
    index) pairs among the detections left, by IoU."""
    cost = (
        np.abs(auto[:, None, :] - logged[None, :, :]).max(axis=2)
        if len(auto) and len(logged)
        else np.zeros((0, 0))
    )
    auto_pairs = _assign(cost, tol)
    semi_pairs: list[tuple[int, int]] = []
    if len(semi):
        taken = np.zeros(len(logged), dtype=bool)
        taken[np.array([j for _, j in auto_pairs], dtype=np.int64)] = True
        free = np.flatnonzero(~taken)
        if free.size:
            iou = iou_matrix(semi, logged[free])
            semi_pairs = [(i, int(free[j])) for i, j in _assign(1.0 - iou, 1.0 - edited_iou)]
    return auto_pairs, semi_pairs


def match_shapes(
    shapes: pd.DataFrame,
    detections: pd.DataFrame,
    frame_join: pd.DataFrame,
    tol: float = 0.5,
    edited_iou: float = 0.5,
    values: tuple[str, str] = ATTRIBUTE_VALUES,
) -> pd.DataFrame:
    """One row per shape of the label under test and per logged detection left unmatched (deleted).

    The function logs its own vocabulary (``wrong``/``correct``); ``logged_value`` is translated into
    the job's ``values`` (same order: the unsafe value first), so both compare directly.

    ``shapes`` has frame, shape_id, source, x1..y2 and the attribute column; ``detections`` the log
    detections. Matched shapes gain the logged columns (request_id, det_index, p_correct, logit,
    detector_score, model_version, thr, temperature, logged_value, log_timestamp, log_x1..log_y2);
    ``frame_joined`` says whether the shape's frame found a request; ``is_shape`` is False on the rows
    of deleted detections.
    """
    chosen = frame_join.loc[frame_join["request_id"].notna(), ["frame", "request_id"]]
    logged = _logged(detections.merge(chosen, on="request_id", how="inner"), values)
    rows = shapes.reset_index(drop=True)
    det_pos = np.full(len(rows), -1)
    s_frame, d_frame = rows["frame"].to_numpy(), logged["frame"].to_numpy()
    s_box, d_box = rows[list(BOX)].to_numpy(float), logged[[f"log_{c}" for c in BOX]].to_numpy(float)
    source = rows["source"].to_numpy()
    d_groups = groups(d_frame)
    for frame, s_idx in groups(s_frame).items():
        d_idx = d_groups.get(frame)
        if d_idx is None:
            continue
        auto_idx = s_idx[source[s_idx] == "auto"]
        semi_idx = s_idx[source[s_idx] == "semi-auto"]
        auto_pairs, semi_pairs = match_frame(s_box[auto_idx], s_box[semi_idx], d_box[d_idx], tol, edited_iou)
        for idx, pairs in ((auto_idx, auto_pairs), (semi_idx, semi_pairs)):
            for i, j in pairs:
                det_pos[idx[i]] = d_idx[j]
    matched = det_pos >= 0
    attached = logged.drop(columns="frame").iloc[det_pos[matched]].set_axis(np.flatnonzero(matched))
    rows = rows.join(attached)
    rows["frame_joined"] = rows["frame"].isin(chosen["frame"])
    rows["is_shape"] = True
    deleted = logged.drop(index=det_pos[matched]).assign(frame_joined=True, is_shape=False)
    return pd.concat([rows, deleted], ignore_index=True) if len(deleted) else rows


def _logged(d: pd.DataFrame, values: tuple[str, str]) -> pd.DataFrame:
    """The logged detection's columns under names that cannot collide with the shape's."""
    out = d[
        [
            "frame",
            "request_id",
            "det_index",
            "p_correct",
            "logit",
            "detector_score",
            "model_version",
            "thr",
            "temperature",
        ]
    ].copy()
    for c, default in (("stage", "expert"), ("p_filter", np.nan), ("shadow_value", None)):  # cascade fields
        out[c] = d[c].to_numpy() if c in d else default
    ours = dict(zip(ATTRIBUTE_VALUES, values))  # the function's vocabulary -> the job's
    out["logged_value"] = d[ATTRIBUTE].replace(ours).to_numpy()
    out["shadow_value"] = out["shadow_value"].replace(ours)
    out["log_timestamp"] = d["timestamp"].to_numpy()
    for c in BOX:
        out[f"log_{c}"] = d[c].to_numpy()
    return out.reset_index(drop=True)
