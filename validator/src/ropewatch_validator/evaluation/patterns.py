"""Error taxonomy per object, in the spirit of TIDE, and where the errors concentrate.

Each prediction gets one of: ``tp`` (matched, same attribute), ``flip_<ref>_to_<pred>`` (matched, the
reference's value ``ref`` predicted as ``pred``; one type per ordered pair of ``settings.values``, e.g.
``flip_wrong_to_correct``, the dangerous one: a person without proper rope use reported as safe),
``duplicate`` (unmatched, but overlaps ≥ IoU threshold a reference that another prediction took),
``localization`` (unmatched, best IoU with a reference in [low_iou, iou)), ``background`` (IoU <
low_iou with every reference). Each reference is ``tp`` or ``missed``; a reference that is only
reached by a localization error is not counted again as missed (``covered_by_localization``).
``edited_by_person`` counts predictions whose source says a person changed them (``semi-auto``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ropewatch_validator.evaluation.match import Settings

BOX_ERRORS = ("missed", "background", "localization", "duplicate")
# What each error type means, for the readers of a report (the flips: FLIP_MEANING).
ERROR_MEANINGS = {
    "missed": "a reference person no prediction matched or localized",
    "background": "a prediction with IoU < low_iou with every reference",
    "localization": "a prediction with best IoU in [low_iou, iou) with a reference",
    "duplicate": "a prediction on a reference that another prediction matched",
    "edited_by_person": "not a model error: semi-auto predictions, whose box a person changed "
    "(still compared as predictions)",
    "covered_by_localization": "a reference only a localization error reached: counted once, as "
    "localization, not as missed",
}
FLIP_MEANING = "a matched person whose reference value {ref} was predicted as {pred}"
SIZE_EDGES = (32.0**2, 96.0**2)  # COCO's small / medium / large areas
GRID = 4


# The columns of the per-object table, before the geometry buckets are added (report.json's rows).
OBJECT_COLUMNS = (
    "role",
    "frame",
    "shape_id",
    "track_id",
    "source",
    "x1",
    "y1",
    "x2",
    "y2",
    "score",
    "occluded",
    "match",
    "iou",
    "best_iou",
    "error",
)


def flip_types(values: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """(name, reference value, predicted value) of every flip the vocabulary allows."""
    return [(f"flip_{r}_to_{p}", r, p) for r in values for p in values if r != p]


def error_types(values: tuple[str, ...]) -> list[str]:
    """The error types of a report, in its key order."""
    return [*BOX_ERRORS, *(name for name, _, _ in flip_types(values)), "edited_by_person"]


def classify(pred: pd.DataFrame, ref: pd.DataFrame, settings: Settings) -> tuple[pd.Series, pd.Series]:
    """Error type of every prediction and every reference (see the module doc)."""
    a = settings.attribute
    matched = pred["match"].to_numpy() >= 0
    pv = pred[a].to_numpy(object)
    rv_of_pred = np.full(len(pred), None, dtype=object)
    rv_of_pred[matched] = ref[a].to_numpy(object)[pred["match"].to_numpy()[matched]]
    best_taken = np.zeros(len(pred), dtype=bool)
    if len(ref):
        best_taken = (pred["best"].to_numpy() >= 0) & (
            ref["match"].to_numpy()[np.maximum(pred["best"], 0)] >= 0
        )
    flips = flip_types(settings.values)
    p_type = np.select(
        [
            *(matched & (rv_of_pred == r) & (pv == p) for _, r, p in flips),
            matched,
            (pred["best_iou"].to_numpy() >= settings.iou) & best_taken,
            pred["best_iou"].to_numpy() >= settings.low_iou,
        ],
        np.array([*(name for name, _, _ in flips), "tp", "duplicate", "localization"]),
        "background",
    )
    localized = set(pred.loc[p_type == "localization", "best"].tolist())
    r_matched = ref["match"].to_numpy() >= 0
    r_type = np.where(
        r_matched,
        "tp",
        np.where(np.isin(np.arange(len(ref)), list(localized)), "covered_by_localization", "missed"),
    )
    return pd.Series(p_type, index=pred.index), pd.Series(r_type, index=ref.index)


def error_counts(p_type: pd.Series, r_type: pd.Series, pred: pd.DataFrame, settings: Settings) -> dict:
    counts = {t: int((p_type == t).sum()) for t in error_types(settings.values)}
    counts["missed"] = int((r_type == "missed").sum())
    counts["edited_by_person"] = int(pred["source"].isin(settings.edited_sources).sum())
    return counts


def object_table(
    pred: pd.DataFrame,
    ref: pd.DataFrame,
    p_type: pd.Series,
    r_type: pd.Series,
    frames: pd.DataFrame,
    settings: Settings,
) -> pd.DataFrame:
    """One row per prediction and per reference with its error type and geometry buckets."""
    size = frames.set_index("frame")[["width", "height"]]
    rows = []
    for role, table, kinds in (("prediction", pred, p_type), ("reference", ref, r_type)):
        t = table.assign(role=role, error=kinds.to_numpy())
        rows.append(t[[*OBJECT_COLUMNS, settings.attribute]])
    obj = pd.concat(rows, ignore_index=True)
    w, h = obj["x2"] - obj["x1"], obj["y2"] - obj["y1"]
    area = w * h
    obj["size"] = np.select([area < SIZE_EDGES[0], area < SIZE_EDGES[1]], ["small", "medium"], "large")
    aspect = h / w.where(w > 0, np.nan)
    obj["aspect"] = pd.cut(aspect, [0, 1, 2, 3, np.inf], labels=["<1", "1-2", "2-3", ">3"]).astype(str)
    fw = obj["frame"].map(size["width"]).replace(0, np.nan)
    fh = obj["frame"].map(size["height"]).replace(0, np.nan)
    cx = ((obj["x1"] + obj["x2"]) / 2 / fw * GRID).clip(0, GRID - 1).fillna(0).astype(int)
    cy = ((obj["y1"] + obj["y2"]) / 2 / fh * GRID).clip(0, GRID - 1).fillna(0).astype(int)
    obj["cell_x"], obj["cell_y"] = cx, cy
    obj["is_error"] = ~obj["error"].isin(["tp", "covered_by_localization"])
    return obj


def breakdowns(obj: pd.DataFrame) -> dict:
    """Recall (references) and precision (predictions) per size, aspect ratio and occlusion bucket."""
    out: dict[str, Any] = {}
    for dim in ("size", "aspect", "occluded"):
        rows = []
        for bucket, g in obj.groupby(dim, sort=True):
            refs, preds = g[g["role"] == "reference"], g[g["role"] == "prediction"]
            tp_r, tp_p = int((refs["error"] == "tp").sum()), int(preds["match"].ge(0).sum())
            rows.append(
                {
                    "bucket": str(bucket),
                    "references": len(refs),
                    "predictions": len(preds),
                    "missed": int((refs["error"] == "missed").sum()),
                    "false_positives": len(preds) - tp_p,
                    "flips": int(preds["error"].str.startswith("flip").sum()),
                    "recall": tp_r / len(refs) if len(refs) else None,
                    "precision": tp_p / len(preds) if len(preds) else None,
                }
            )
        out[dim] = rows
    errors = obj[obj["is_error"]]
    grid = np.zeros((GRID, GRID), dtype=np.int64)
    np.add.at(grid, (errors["cell_y"].to_numpy(), errors["cell_x"].to_numpy()), 1)
    out["position_grid"] = {"rows": GRID, "cols": GRID, "errors": grid.tolist()}
    return out


def worst_frames(obj: pd.DataFrame, k: int) -> list[dict]:
    """The k frames with most errors, with the objects involved."""
    errors = obj[obj["is_error"]]
    top = errors.groupby("frame").size().sort_values(ascending=False, kind="stable").head(k)
    out = []
    for frame, n in top.items():
        rows = errors[errors["frame"] == frame]
        out.append(
            {
                "frame": int(frame),
                "errors": int(n),
                "by_type": rows["error"].value_counts().to_dict(),
                "objects": [
                    {
                        "role": r.role,
                        "error": r.error,
                        "box": [round(float(v), 1) for v in (r.x1, r.y1, r.x2, r.y2)],
                        "shape_id": None if pd.isna(r.shape_id) else int(r.shape_id),
                    }
                    for r in rows.itertuples()
                ],
            }
        )
    return out


def error_ranges(obj: pd.DataFrame, k: int) -> list[dict]:
    """Runs of consecutive frames with errors (for video tasks), the k with most errors."""
    per_frame = obj[obj["is_error"]].groupby("frame").size()
    if per_frame.empty:
        return []
    frames = per_frame.index.to_numpy()
    breaks = np.flatnonzero(np.diff(frames) > 1) + 1
    runs = [
        {"start": int(f[0]), "stop": int(f[-1]), "errors": int(per_frame.loc[f].sum())}
        for f in np.split(frames, breaks)
    ]
    return sorted(runs, key=lambda r: -r["errors"])[:k]
