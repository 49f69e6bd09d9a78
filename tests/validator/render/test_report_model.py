"""report.json is a typed model: the committed JSON Schema is the model's, real reports validate against
it, old (schema 1.0) reports still load, and metric paths are checked against the model."""

from __future__ import annotations

import json

import jsonschema
import pytest
from pydantic import ValidationError

from ropewatch_validator.evaluation.match import Settings, match, select
from ropewatch_validator.render import report as rpt
from ropewatch_validator.render.model import SCHEMA_PATH, Report, Source, check_metric, json_schema
from ropewatch_validator.trace.model import Trace
from support.reports import TRACE_FRAMES, TRACE_SETTINGS

SOURCE = {
    "host": "http://cvat.local:8080",
    "job": 1,
    "task": 2,
    "project": None,
    "job_updated_date": "2026-11-20T10:00:00Z",
    "reference_mode": "manual",
    "reference_job": None,
}


def test_committed_schema_is_the_models() -> None:
    # Regenerate with `python -m ropewatch_validator.render.model` after changing the model.
    assert SCHEMA_PATH.read_text(encoding="utf-8") == json_schema()


def _two_frame_report(values=("wrong", "correct")):
    import pandas as pd

    a, b = values
    shapes = pd.DataFrame(
        [  # frame 0: one exact match whose value flips a -> b; frame 1: a missed reference
            (0, 1, "auto", 10.0, 10.0, 50.0, 90.0, b),
            (0, 2, "manual", 10.0, 10.0, 50.0, 90.0, a),
            (1, 3, "manual", 100.0, 10.0, 140.0, 90.0, b),
        ],
        columns=["frame", "shape_id", "source", "x1", "y1", "x2", "y2", "rope"],
    ).assign(label="person", type="rectangle", track_id=None, score=1.0, occluded=False)
    frames = pd.DataFrame({"frame": [0, 1], "width": 640, "height": 480, "deleted": False})
    settings = Settings(attribute="rope", values=tuple(values))
    pred, ref = match(
        select(shapes, settings, settings.pred_sources), select(shapes, settings, settings.ref_sources)
    )
    return rpt.build(
        source=Source(**SOURCE), settings=settings, frames=frames, pred=pred, ref=ref, skipped={}
    )


def test_built_report_validates_against_the_committed_schema_and_round_trips() -> None:
    report = _two_frame_report()
    data = json.loads(report.to_json())
    jsonschema.validate(data, json.loads(SCHEMA_PATH.read_text()))
    assert "trace" not in data and data["schema_version"] == "1.1"
    again = Report.model_validate_json(report.to_json())
    assert again == report
    # 1 prediction, 2 references, 1 match: the matched pair is a wrong->correct flip, one reference missed.
    assert (report.detection.tp, report.detection.fn, report.errors.missed) == (1, 1, 1)
    assert report.errors.flip("wrong", "correct") == 1 and report.errors.flip("correct", "wrong") == 0
    assert report.dangerous_flips() == 1
    assert report.metric("flips_wrong_to_correct_per_1000") == pytest.approx(1 / 2 * 1000)


def test_flip_names_follow_the_vocabulary() -> None:
    report = _two_frame_report(("unsafe", "safe"))
    assert set(report.errors.counts()) == {
        "missed",
        "background",
        "localization",
        "duplicate",
        "edited_by_person",
        "flip_unsafe_to_safe",
        "flip_safe_to_unsafe",
    }
    assert report.errors.flip("unsafe", "safe") == 1 and report.dangerous_flips() == 1
    assert report.metric("attribute.per_class.unsafe.support") == 1.0
    assert report.metric("attribute.per_class.wrong.support") is None  # not this report's vocabulary


def test_reports_of_schema_1_0_load(make_report) -> None:
    old = json.loads(make_report().to_json())
    old["schema_version"] = "1.0"
    del old["error_ranges"]  # written by every 1.0 report, but defaulted
    report = Report.model_validate(old)
    assert report.schema_version == "1.0" and report.metric("attribute.per_class.wrong.support") == 45.0


def test_non_finite_numbers_become_null_and_unknown_keys_are_refused(make_report) -> None:
    data = json.loads(make_report().to_json())
    data["detection"]["ap"] = float("nan")
    assert Report.model_validate(data).detection.ap is None
    data["detection"]["apx"] = 1.0
    with pytest.raises(ValidationError, match="apx"):
        Report.model_validate(data)
    data = json.loads(make_report().to_json())
    data["errors"]["flipped"] = 3
    with pytest.raises(ValidationError, match="flipped"):
        Report.model_validate(data)


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("attribute.per_class.wrong.f1", None),
        ("attribute.per_class.any_class.support", None),
        ("errors.flip_wrong_to_correct", None),
        ("flips_wrong_to_correct_per_1000", None),
        ("dangerous_flips_per_1000", None),
        ("detection.recal", "'detection.recal' is not in report.json"),
        ("attribute.per_class.wrong", "is not a number"),
        ("source.host", "is not a number"),
        ("errors.flipped", "'errors.flipped' is not in report.json"),
    ],
)
def test_metric_paths_are_checked_against_the_model(path, problem) -> None:
    found = check_metric(path)
    assert found is None if problem is None else problem in found


def test_summary_empties_every_per_object_table_and_stays_a_report(make_report) -> None:
    trace = {
        "logs": {},
        "frames": TRACE_FRAMES,
        "settings": TRACE_SETTINGS,
        "model_versions": ["v1"],
        "lifecycle": {
            "counts": {"accepted": 1},
            "final_objects": 1,
            "work_saved_share": 1.0,
            "original_confusion": {
                "labels": ["wrong", "correct"],
                "rows": "final",
                "columns": "logged",
                "matrix": [[0, 0], [0, 1]],
                "unusable_values": 0,
            },
            "unjoined_shapes": [],
        },
        "calibration": None,
        "scores": {"logit": [0.5], "p_correct": [0.62], "y": [1]},
        "objects": [{"frame": 0, "state": "accepted"}],
        "mistakes": [{"frame": 0, "state": "attribute_corrected", "crop": "iVBORw0KGgo="}],
    }
    report = make_report().with_trace(Trace.model_validate(trace), "v1")
    summary = Report.model_validate(report.summary())
    assert summary.objects.rows == [] and summary.objects.columns == report.objects.columns
    assert summary.trace.objects == [] and summary.trace.mistakes == [] and summary.trace.scores.logit == []
    assert summary.trace.lifecycle == report.trace.lifecycle and summary.attribute == report.attribute
    assert "trace" not in make_report().summary()  # untraced reports stay without the key
