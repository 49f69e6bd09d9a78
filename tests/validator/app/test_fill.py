"""``annotate fill`` without a server: which boxes a run classifies, the attribute-only write body, and
the function client's answers to a refused frame and a broken answer (pytest-httpserver as the function)."""

from __future__ import annotations

import base64
import json

import pytest
from werkzeug import Response

from ropewatch_validator.app.fill import FillOptions, targets, with_value
from ropewatch_validator.cvat.fetch import parse_labels
from ropewatch_validator.ops.function_client import FunctionClassifier, FunctionError, FunctionRefused

LABELS = parse_labels(
    [
        {
            "id": 1,
            "name": "person",
            "attributes": [
                {"id": 7, "name": "safety_rope_use", "values": ["wrong", "correct"], "default_value": "wrong"}
            ],
        },
        {"id": 2, "name": "car", "attributes": []},
    ]
)


def _shape(sid, frame, value, label=1, kind="rectangle"):
    attributes = [] if value is None else [{"spec_id": 7, "value": value}]
    return {
        "id": sid,
        "frame": frame,
        "label_id": label,
        "type": kind,
        "points": [1, 2, 3, 4],
        "source": "auto",
        "attributes": attributes,
        "z_order": 3,
    }


ANNOTATIONS = {
    "shapes": [
        _shape(1, 0, None),  # no entry: unset
        _shape(2, 0, "wrong"),  # the default: unset
        _shape(3, 0, "correct"),  # set
        _shape(4, 1, None, label=2),  # a car
        _shape(5, 1, None, kind="polygon"),  # not a box
        _shape(6, 9, None),  # a deleted frame
        _shape(7, 1, "correct"),  # filled before with this value
        _shape(8, 1, "wrong"),  # filled before as correct, reset to the default since
    ],
    "tracks": [{"label_id": 1, "shapes": []}],
}


def test_only_unset_picks_no_value_and_the_default():
    todo, counts = targets(
        ANNOTATIONS, LABELS, {0, 1}, {7: "correct", 8: "correct"}, FillOptions(only_unset=True)
    )
    assert [(t.shape_id, t.current) for t in todo] == [(1, None), (2, "wrong"), (8, "wrong")]
    assert (counts["candidates"], counts["set"], counts["filled"], counts["tracks"]) == (5, 1, 1, 1)


def test_all_still_skips_what_it_filled_before():
    todo, counts = targets(ANNOTATIONS, LABELS, {0, 1}, {7: "correct", 8: "correct"}, FillOptions())
    assert [t.shape_id for t in todo] == [1, 2, 3, 8] and counts["filled"] == 1


def test_a_label_without_the_attribute_is_an_error():
    labels = parse_labels([{"id": 1, "name": "person", "attributes": []}])
    with pytest.raises(ValueError, match="label 'person' of this job has no attribute 'safety_rope_use'"):
        targets(ANNOTATIONS, labels, {0}, {}, FillOptions())


def test_the_write_changes_only_the_attribute():
    shape = {
        **_shape(3, 0, "correct"),
        "attributes": [{"spec_id": 9, "value": "x"}, {"spec_id": 7, "value": "correct"}],
    }
    out = with_value(shape, 7, "wrong")
    assert out["attributes"] == [{"spec_id": 9, "value": "x"}, {"spec_id": 7, "value": "wrong"}]
    assert {k: v for k, v in out.items() if k != "attributes"} == {
        k: v for k, v in shape.items() if k != "attributes"
    }


def test_function_client_sends_boxes_and_reads_values(httpserver):
    seen = {}

    def answer(request):
        seen.update(request.get_json(), rid=request.headers["X-Request-Id"])
        items = [
            {
                "label": "person",
                "points": b,
                "type": "rectangle",
                "attributes": [{"name": "safety_rope_use", "value": v}],
            }
            for b, v in zip(seen["boxes"], ["wrong", "correct"])
        ]
        return Response(
            json.dumps(items),
            200,
            headers={"X-Request-Id": seen["rid"]},
            content_type="application/json",
        )

    httpserver.expect_request("/", method="POST").respond_with_handler(answer)
    got = FunctionClassifier(httpserver.url_for("/"), retries=0)(b"\x89PNG", [[1, 2, 3, 4], [5, 6, 7, 8]])
    assert got.values == ("wrong", "correct") and got.request_id == seen["rid"]
    assert base64.b64decode(seen["image"]) == b"\x89PNG" and seen["boxes"] == [[1, 2, 3, 4], [5, 6, 7, 8]]


def test_function_refusing_a_frame_and_a_broken_answer(httpserver):
    client = FunctionClassifier(httpserver.url_for("/"), retries=0)
    httpserver.expect_oneshot_request("/").respond_with_json(
        {"error": "bad_boxes", "message": "boxes[0] keeps less than 1 pixel", "request_id": "r"}, status=400
    )
    with pytest.raises(
        FunctionRefused, match=r"^function refused the frame: boxes\[0\] keeps less than 1 pixel$"
    ):
        client(b"x", [[1, 2, 3, 4]])
    httpserver.expect_oneshot_request("/").respond_with_json([])
    with pytest.raises(FunctionError, match="HTTP 200, not one item per box"):
        client(b"x", [[1, 2, 3, 4]])


def test_local_classifier_writes_the_functions_records(tmp_path, fixed_logit_checkpoint, tiny_filter_dict):
    """In process: the checkpoint's value per given box and one ``inference`` record per frame; with a
    fast filter whose band is empty every person is decided by the filter (stage ``filter``)."""
    import io
    import math

    from ropewatch_core.model.checkpoint import save_checkpoint
    from ropewatch_core.records import check_inference
    from ropewatch_validator.learn.fill import LocalClassifier
    from support.cvat_rest import jpeg

    model, filt = tmp_path / "m.pt", tmp_path / "f.pt"
    save_checkpoint(fixed_logit_checkpoint(bias=(0.0, 2.0), version="fill-unit"), model)
    save_checkpoint({**tiny_filter_dict, "band": [0.0, 0.0]}, filt)
    frame, boxes = jpeg(320, 240, 5), [[10.0, 10.0, 60.0, 110.0], [100.0, 20.0, 150.0, 120.0]]

    stream = io.StringIO()
    got = LocalClassifier(model, stream)(frame, boxes)
    assert got.values == ("correct", "correct") and got.model_version == "fill-unit"
    assert got.p_correct == pytest.approx((1 / (1 + math.exp(-2.0)),) * 2, abs=1e-6)
    (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    check_inference(record)
    assert record["request_id"] == got.request_id and record["boxes_given"] is True
    assert [d["box"] for d in record["detections"]] == boxes and {
        d["stage"] for d in record["detections"]
    } == {"expert"}

    stream = io.StringIO()
    LocalClassifier(model, stream, fast_filter=filt)(frame, boxes)
    (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert record["filter_version"] == "filter-v1" and {d["stage"] for d in record["detections"]} == {
        "filter"
    }


def test_local_classifier_refuses_a_box_outside_the_frame(tmp_path, fixed_logit_checkpoint):
    import io

    from ropewatch_core.model.checkpoint import save_checkpoint
    from ropewatch_validator.learn.fill import FrameRefused, LocalClassifier
    from support.cvat_rest import jpeg

    model = tmp_path / "m.pt"
    save_checkpoint(fixed_logit_checkpoint(), model)
    stream = io.StringIO()
    with pytest.raises(FrameRefused, match=r"boxes\[0\]"):
        LocalClassifier(model, stream)(jpeg(320, 240, 5), [[400.0, 300.0, 500.0, 400.0]])
    assert stream.getvalue() == ""  # no record for a frame the model did not take
