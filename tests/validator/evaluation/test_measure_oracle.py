"""Matching, metrics and the error taxonomy against sklearn and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from ropewatch_validator.cvat import parse
from ropewatch_validator.evaluation import measure, patterns
from ropewatch_validator.evaluation.match import Settings, iou_matrix, match, select
from ropewatch_validator.render import report
from ropewatch_validator.render.model import Source
from ropewatch_validator.sandbox import synthetic

S = Settings()


def boxes(rows: list[tuple], source: str) -> pd.DataFrame:
    """(frame, x1, y1, x2, y2, value[, score]) rows as a shapes table."""
    df = pd.DataFrame([r[:6] for r in rows], columns=["frame", "x1", "y1", "x2", "y2", "safety_rope_use"])
    df["score"] = [r[6] if len(r) > 6 else 1.0 for r in rows]
    return df.assign(
        label="person",
        type="rectangle",
        source=source,
        occluded=False,
        shape_id=range(len(df)),
        track_id=None,
    )


def matched(pred_rows, ref_rows, pred_source="auto", iou=0.5):
    shapes = pd.concat([boxes(pred_rows, pred_source), boxes(ref_rows, "manual")], ignore_index=True)
    return match(select(shapes, S, S.pred_sources), select(shapes, S, S.ref_sources), iou)


def generated(n=120, **kw):
    job = synthetic.generate(n, **kw)
    shapes, skipped, _ = parse.shapes_table(job.annotations, parse.parse_labels(job.labels), n - 1)
    pred, ref = match(select(shapes, S, S.pred_sources), select(shapes, S, S.ref_sources), S.iou)
    return job, pred, ref, skipped


def test_iou_hand_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 2, 2]], float)
    b = np.array([[5, 0, 15, 10], [20, 20, 30, 30]], float)
    np.testing.assert_allclose(iou_matrix(a, b), [[50 / 150, 0], [0, 0]])


def test_hungarian_beats_greedy():
    # greedy by IoU would give p0 to r0 (IoU 0.82) and leave p1 with nothing ≥ 0.5;
    # the optimal assignment matches both
    ref = [(0, 0, 0, 10, 10, "wrong"), (0, 2, 0, 12, 10, "wrong")]
    pred = [(0, 1, 0, 11, 10, "wrong"), (0, -1, 0, 9, 10, "wrong")]
    p, r = matched(pred, ref)
    assert sorted(p["match"]) == [0, 1] and (r["match"] >= 0).all()


def test_iou_threshold_decides():
    ref = [(0, 0, 0, 10, 10, "correct")]
    pred = [(0, 0, 0, 10, 4.5, "correct")]  # IoU 0.45
    assert matched(pred, ref, iou=0.5)[0]["match"].tolist() == [-1]
    assert matched(pred, ref, iou=0.4)[0]["match"].tolist() == [0]


def test_hand_computed_case():
    ref = [
        (0, 0, 0, 10, 20, "wrong"),
        (0, 50, 0, 60, 20, "correct"),
        (1, 0, 0, 10, 20, "wrong"),
        (1, 30, 30, 40, 50, "correct"),
        (2, 0, 0, 10, 10, "correct"),
    ]
    pred = [
        (0, 0, 0, 10, 20, "correct"),  # TP, flip wrong→correct
        (0, 50, 0, 60, 20, "correct"),  # TP
        (0, 51, 0, 61, 20, "correct"),  # duplicate of ref 1
        (1, 0, 0, 10, 20, "wrong"),  # TP
        (1, 30, 38, 40, 58, "wrong"),  # IoU 12/28 → localization error
        (2, 200, 200, 220, 240, "wrong"),
    ]  # background
    pred_t, ref_t = matched(pred, ref)
    det = measure.detection(pred_t, ref_t)
    assert (det["tp"], det["fp"], det["fn"]) == (3, 3, 2)
    assert det["precision"] == pytest.approx(0.5) and det["recall"] == pytest.approx(0.6)
    assert det["f1"] == pytest.approx(2 * 0.5 * 0.6 / 1.1)
    att = measure.attribute(pred_t, ref_t, "safety_rope_use", S.values)
    assert att["confusion_matrix"] == [[1, 1], [0, 1]]  # rows ref (wrong, correct), cols pred
    assert att["missed"] == {"wrong": 0, "correct": 2} and att["extra"] == {"wrong": 2, "correct": 1}
    assert att["per_class"]["wrong"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2,
    }
    assert att["accuracy"] == pytest.approx(2 / 3)
    p_type, r_type = patterns.classify(pred_t, ref_t, S)
    assert p_type.tolist() == ["flip_wrong_to_correct", "tp", "duplicate", "tp", "localization", "background"]
    assert sorted(r_type.tolist()) == ["covered_by_localization", "missed", "tp", "tp", "tp"]
    counts = patterns.error_counts(p_type, r_type, pred_t, S)
    assert counts == {
        "missed": 1,
        "background": 1,
        "localization": 1,
        "duplicate": 1,
        "flip_wrong_to_correct": 1,
        "flip_correct_to_wrong": 0,
        "edited_by_person": 0,
    }


def test_semi_auto_is_counted_as_edited():
    pred_t, ref_t = matched(
        [(0, 0, 0, 10, 10, "wrong")], [(0, 0, 0, 10, 10, "wrong")], pred_source="semi-auto"
    )
    p_type, r_type = patterns.classify(pred_t, ref_t, S)
    assert patterns.error_counts(p_type, r_type, pred_t, S)["edited_by_person"] == 1


def test_attribute_metrics_equal_sklearn_on_generated_job():
    _, pred, ref, _ = generated()
    pairs = pred[pred["match"] >= 0]
    y_pred = pairs["safety_rope_use"].to_numpy()
    y_true = ref["safety_rope_use"].to_numpy()[pairs["match"].to_numpy()]
    att = measure.attribute(pred, ref, "safety_rope_use", S.values)
    labels = list(S.values)
    assert att["confusion_matrix"] == confusion_matrix(y_true, y_pred, labels=labels).tolist()
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for i, v in enumerate(labels):
        got = att["per_class"][v]
        assert (got["precision"], got["recall"], got["f1"], got["support"]) == pytest.approx(
            (p[i], r[i], f[i], s[i])
        )
    assert att["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert att["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=labels, average="macro"))
    det = measure.detection(pred, ref)
    assert (
        det["tp"] == len(pairs) and det["fp"] + det["tp"] == len(pred) and det["fn"] + det["tp"] == len(ref)
    )


def test_average_precision_equals_sklearn_scaled():
    _, pred, ref, _ = generated(real_scores=True)
    ap, curve = measure.average_precision(pred, len(ref))
    is_tp = pred["match"].to_numpy() >= 0
    expected = average_precision_score(is_tp, pred["score"]) * is_tp.sum() / len(ref)
    assert ap == pytest.approx(expected) and 0 < ap < 1
    assert curve["recall"][-1] <= 1.0


def test_no_ap_without_real_scores():
    for kw in ({"with_score": False}, {"with_score": True}):  # old server / CVAT's Nuclio score 1.0
        _, pred, ref, _ = generated(30, **kw)
        assert measure.average_precision(pred, len(ref)) == (None, None)


def test_report_counts_and_breakdowns_are_consistent():
    job, pred, ref, skipped = generated()
    frames = parse.frames_table(job.job, job.meta)
    rep = report.build(
        source=Source(
            host="h",
            job=1,
            task=2,
            project=None,
            job_updated_date="d",
            reference_mode="manual",
            reference_job=None,
        ),
        settings=S,
        frames=frames,
        pred=pred,
        ref=ref,
        skipped=skipped,
    )
    assert rep.counts.predictions == len(pred) and rep.counts.references == len(ref)
    by_size = rep.breakdowns.size
    assert sum(b.references for b in by_size) == len(ref)
    assert sum(b.missed for b in by_size) == rep.errors.missed
    grid = np.asarray(rep.breakdowns.position_grid.errors)
    errors = sum(v for k, v in rep.errors.counts().items() if k != "edited_by_person")
    assert grid.sum() == errors
    assert len(report.objects_frame(rep)) == len(pred) + len(ref)
    worst = rep.worst_frames
    assert [w.errors for w in worst] == sorted((w.errors for w in worst), reverse=True)
