"""Nothing is dropped without a word: every box, value and attribute entry left out of a metric is
counted by reason in report.json and warned about; a job whose matched pairs have no value says so,
and a rule may ask to fire on the null metric that follows."""

from __future__ import annotations

import json

import pytest

from ropewatch_validator.cli.main import main
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic

PERSON, SPEC = 111, 111  # synthetic.generate's person label and its safety_rope_use attribute


def box(shape_id, frame, x, source, attributes, label_id=PERSON):
    return {
        "id": shape_id, "type": "rectangle", "frame": frame, "label_id": label_id, "group": 0,
        "source": source, "occluded": False, "outside": False, "z_order": 0, "rotation": 0.0,
        "points": [x, 0.0, x + 100.0, 100.0], "elements": [], "attributes": attributes,
    }  # fmt: skip


def value(v):
    return [{"spec_id": SPEC, "value": v}]


def serve(shapes):
    job = synthetic.generate(2, extras=False)  # frames 0 and 1
    job.annotations = {"version": 0, "tags": [], "tracks": [], "shapes": shapes}
    # bodies served exactly as written: CVAT itself fills a missing attribute with its default on read,
    # so shapes without a value come from other servers or exports
    state = sandbox.CvatState(fill_defaults=False)
    state.add(job)
    return sandbox.serve(state)


def validate(url, tmp_path, *extra):
    out = tmp_path / "out"
    code = main(
        ["validate-job", "101", "--server-host", url, "--out", str(out), "--db", str(tmp_path / "h.sqlite"),
         "--format", "json", *extra]
    )  # fmt: skip
    return code, json.loads((out / "job-101" / "report.json").read_text())


def test_every_left_out_box_value_and_entry_is_counted_by_reason(tmp_path, capsys):
    shapes = [
        box(1, 0, 0, "manual", value("wrong")),
        box(2, 0, 0, "auto", value("correct")),  # pair 1: both valued, a wrong -> correct flip
        box(3, 0, 200, "manual", []),  # reference without a value
        box(4, 0, 200, "auto", [{"value": "wrong"}]),  # entry without spec_id: prediction without value
        box(5, 1, 0, "manual", value("maybe")),  # a value outside the vocabulary
        box(6, 1, 0, "auto", [{"spec_id": 999, "value": "wrong"}]),  # unknown spec_id: no value
        box(7, 1, 400, "auto", value("wrong"), label_id=555),  # a label the job does not list
        box(8, 1, 600, "ml-import", value("wrong")),  # neither a prediction nor a reference source
        box(9, 7, 0, "manual", value("wrong")),  # frame 7 is outside the job's frames 0-1
    ]
    with serve(shapes) as (url, _):
        code, report = validate(url, tmp_path)
    assert code == 0  # before: KeyError 'spec_id' ended the job with exit 2
    assert report["counts"]["dropped"] == {
        "attribute_without_spec_id": 1,  # box 4
        "unknown_spec_id": 1,  # box 6
        "unknown_label_id": 1,  # box 7
        "unknown_source": 1,  # box 8
        "outside_job_frames": 1,  # box 9
        "prediction_without_value": 2,  # boxes 4 and 6
        "reference_without_value": 1,  # box 3
        "reference_unknown_value": 1,  # box 5
    }
    # 3 matched pairs (1-2, 3-4, 5-6); only pair 1 has two values: one wrong -> correct flip
    att = report["attribute"]
    assert att["confusion_matrix"] == [[0, 1], [0, 0]] and att["pairs_without_value"] == 2
    warning = "9 left out of the metrics: attribute_without_spec_id 1, outside_job_frames 1, "
    assert report["warnings"] == [
        warning + "prediction_without_value 2, reference_unknown_value 1, reference_without_value 1, "
        "unknown_label_id 1, unknown_source 1, unknown_spec_id 1"
    ]
    printed = capsys.readouterr()
    assert f"validate-job: job 101: warning: {warning}" in printed.err
    assert "warning: 9 left out of the metrics" in printed.out  # the terminal summary


@pytest.mark.parametrize(("fire_on_null", "code"), [(False, 0), (True, 1)])
def test_no_valued_pair_is_loud_and_a_rule_may_fire_on_null(tmp_path, capsys, fire_on_null, code):
    shapes = [box(1, 0, 0, "manual", []), box(2, 0, 0, "auto", value("wrong"))]
    rules = tmp_path / "rules.yaml"
    rules.write_text(
        "rule:\n- {name: wrong-f1, metric: attribute.per_class.wrong.f1, op: '<', threshold: 0.8, "
        f"fire_on_null: {str(fire_on_null).lower()}}}\n"
    )
    with serve(shapes) as (url, _):
        got, report = validate(url, tmp_path, "--rules", str(rules), "--quiet")
    assert got == code
    assert report["attribute"]["per_class"]["wrong"]["f1"] is None
    err = capsys.readouterr().err
    assert (
        "validate-job: job 101: warning: no matched pair has a safety_rope_use value (1 matched, 1 without a "
        "value): the confusion matrix is empty and every safety_rope_use metric is null" in err
    )
    assert ("alert rules fired: wrong-f1" in err) == fire_on_null
