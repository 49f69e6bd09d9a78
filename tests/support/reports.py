"""Typed reports for tests: every number worked out by hand, and traced ones for recalibration."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ropewatch_validator.render.model import Report
from ropewatch_validator.trace.model import Trace


def build_report(
    job=1,
    updated="2026-11-20T10:00:00.000000Z",
    model_version="v1",
    cm=((40, 5), (3, 52)),
    det=(100, 4, 6),
    host="http://cvat.local:8080",
    task=10,
    project=3,
):
    """A typed report per the brief's contract, its metrics worked out by hand from a
    wrong/correct confusion matrix (rows = reference) and detection counts (tp, fp, fn)."""

    def ratio(a, b):
        return a / b if b else None

    def f1(p, r):
        return None if p is None or r is None or p + r == 0 else 2 * p * r / (p + r)

    (ww, wc), (cw, cc) = cm
    tp, fp, fn = det
    per_class = {}
    for name, hit, pred, ref in (("wrong", ww, ww + cw, ww + wc), ("correct", cc, cc + wc, cw + cc)):
        p, r = ratio(hit, pred), ratio(hit, ref)
        per_class[name] = {"precision": p, "recall": r, "f1": f1(p, r), "support": ref}
    dp, dr = ratio(tp, tp + fp), ratio(tp, tp + fn)
    no_buckets = {"size": [], "aspect": [], "occluded": []}
    return Report.model_validate(
        {
            "schema_version": "1.0",
            "generated_at": updated,
            "source": {
                "host": host,
                "job": job,
                "task": task,
                "project": project,
                "job_updated_date": updated,
                "reference_mode": "manual",
                "reference_job": None,
            },
            "model_version": model_version,
            "settings": {
                "iou": 0.5,
                "low_iou": 0.1,
                "label": "person",
                "attribute": "safety_rope_use",
                "values": ["wrong", "correct"],
                "pred_sources": ["auto", "semi-auto"],
                "ref_sources": ["manual", "file", "consensus"],
                "edited_sources": ["semi-auto"],
                "top_k": 10,
            },
            "counts": {
                "frames": 50,
                "frames_evaluated": 50,
                "frames_deleted": 0,
                "predictions": tp + fp,
                "references": tp + fn,
                "semi_auto": 0,
                "skipped_shapes": {},
            },
            "detection": {
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "precision": dp,
                "recall": dr,
                "f1": f1(dp, dr),
                "ap": None,
            },
            "attribute": {
                "name": "safety_rope_use",
                "labels": ["wrong", "correct"],
                "confusion_matrix": [[ww, wc], [cw, cc]],
                "row_totals": [ww + wc, cw + cc],
                "column_totals": [ww + cw, wc + cc],
                "missed": {"wrong": 0, "correct": 0},
                "extra": {"wrong": 0, "correct": 0},
                "per_class": per_class,
                "accuracy": (ww + cc) / (ww + wc + cw + cc),
                "macro_f1": sum((c["f1"] or 0.0) for c in per_class.values()) / 2,
                "pairs_without_value": 0,
            },
            "errors": {
                "missed": fn,
                "background": fp,
                "localization": 0,
                "duplicate": 0,
                "flip_wrong_to_correct": wc,
                "flip_correct_to_wrong": cw,
                "edited_by_person": 0,
            },
            "breakdowns": {**no_buckets, "position_grid": {"rows": 4, "cols": 4, "errors": [[0] * 4] * 4}},
            "worst_frames": [],
            "objects": {"columns": ["role", "frame"], "rows": [["reference", 0]] * (tp + fn)},
            "pr_curve": None,
        }
    )


# the trace blocks a report made with --logs always has, for traced reports built by hand
TRACE_FRAMES = {
    "frames": 1,
    "joined": 1,
    "by_sha256": 1,
    "by_pixel_sha256": 0,
    "unjoined": 0,
    "unjoined_frames": [],
    "reruns": 0,
    "after_cutoff": 0,
    "cutoff": None,
    "rule": "latest record at or before cutoff, else earliest after it (flagged)",
}
TRACE_SETTINGS = {
    "box_tolerance_px": 0.5,
    "edited_iou": 0.5,
    "label": "person",
    "attribute": "safety_rope_use",
    "values": ["wrong", "correct"],
    "ece": "top-label, 15 equal-width bins",
}


def traced_report(z: np.ndarray, y: np.ndarray, versions: Sequence[str] = ("v1",)) -> Report:
    """A report traced with ``--logs`` whose ``trace.scores`` are logits ``z`` and final values ``y``."""
    n = int(np.size(y))
    trace = {
        "logs": {},
        "frames": TRACE_FRAMES,
        "settings": TRACE_SETTINGS,
        "model_versions": list(versions),
        "lifecycle": {
            "counts": {"accepted": n},
            "final_objects": n,
            "work_saved_share": 1.0 if n else None,
            "original_confusion": {
                "labels": ["wrong", "correct"],
                "rows": "final value in the job",
                "columns": "model's original (logged) prediction",
                "matrix": [[0, 0], [0, 0]],
                "unusable_values": 0,
            },
            "unjoined_shapes": [],
        },
        "calibration": None,
        "scores": {
            "logit": np.asarray(z, float).tolist(),
            "p_correct": (1.0 / (1.0 + np.exp(-np.asarray(z, float)))).tolist(),
            "y": np.asarray(y, int).tolist(),
        },
        "objects": [],
    }
    return build_report(job=7, task=3, host="http://cvat").with_trace(
        Trace.model_validate(trace), versions[0] if versions else None
    )
