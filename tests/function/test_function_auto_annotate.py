"""The cvat-sdk auto-annotation module: same spec as function.yaml, score and attribute on each rectangle."""

from __future__ import annotations

import hashlib
import importlib.util

import cvat_sdk.auto_annotation as cvataa
import numpy as np
import pytest
from PIL import Image

from ropewatch_core.spec import ATTRIBUTE_VALUES, cvat_spec
from support.paths import REPO

PATH = REPO / "functions" / "safety_rope" / "auto_annotate.py"


def load_module():
    spec = importlib.util.spec_from_file_location("safety_rope_auto_annotate", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Context(cvataa.DetectionFunctionContext):
    def __init__(self, threshold):
        self._threshold = threshold

    frame_name = property(lambda self: "frame_000000.jpg")
    conf_threshold = property(lambda self: self._threshold)
    conv_mask_to_poly = property(lambda self: False)


def test_spec_matches_the_nuclio_spec():
    module = load_module()
    (label,) = module.spec.labels
    (attribute,) = label.attributes
    declared = cvat_spec()[0]
    assert (label.name, str(label.type)) == (declared["name"], declared["type"])
    assert (attribute.name, str(attribute.input_type), list(attribute.values)) == (
        declared["attributes"][0]["name"],
        "select",
        list(ATTRIBUTE_VALUES),
    )


def test_detect_gives_scored_rectangles_with_the_attribute(tiny_checkpoint, person_detector_weights):
    module = load_module()
    function = module.create(
        model_path=str(tiny_checkpoint),
        detector_path=str(person_detector_weights),
        detector_arch="fasterrcnn_mobilenet_v3_large_320_fpn",
    )
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    shapes = function.detect(Context(0.8), image)
    assert shapes, "the all-person detector finds someone"
    for shape in shapes:
        assert str(shape.type) == "rectangle" and shape.label_id == 0 and shape.frame == 0
        assert 0.8 <= shape.score <= 1.0 and len(shape.points) == 4
        (value,) = shape.attributes
        assert value.spec_id == 0 and value.value in ATTRIBUTE_VALUES
    assert len(function.detect(Context(None), image)) >= len(shapes)  # default threshold 0.5 <= 0.8
    assert function.predictor.detector.sizes == (320, 640)  # the architecture's own


def test_detector_sizes_are_parameters(tiny_checkpoint, person_detector_weights):
    function = load_module().create(
        model_path=str(tiny_checkpoint),
        detector_path=str(person_detector_weights),
        detector_arch="fasterrcnn_mobilenet_v3_large_320_fpn",
        detector_min_size=96,
        detector_max_size=128,
    )
    assert function.predictor.detector.sizes == (96, 128)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    shapes = function.detect(Context(0.8), image)
    assert shapes and all(0 <= s.points[0] < s.points[2] <= 160 for s in shapes)  # frame pixels


def test_detect_writes_the_same_inference_record_as_the_nuclio_function(
    tiny_checkpoint, person_detector_weights, tmp_path
):
    """Issue 10.7: cvat-cli runs are traceable: one record per frame through ropewatch_core.records."""
    import jsonschema

    from ropewatch_core.records import RecordReader, schema
    from ropewatch_validator.trace.logs import read_logs

    log_path = tmp_path / "cli.jsonl"
    function = load_module().create(
        model_path=str(tiny_checkpoint),
        detector_path=str(person_detector_weights),
        detector_arch="fasterrcnn_mobilenet_v3_large_320_fpn",
        log_path=str(log_path),
    )
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    shapes = function.detect(Context(0.8), image)
    logs = read_logs([log_path])
    assert logs.stats.inference == 1 and logs.stats.malformed == 0
    (row,) = logs.requests.itertuples()
    assert (row.width, row.height, row.n_detections, row.worker_id) == (160, 120, len(shapes), "cvat-cli")
    assert row.pixel_sha256 == hashlib.sha256(np.asarray(image).tobytes()).hexdigest()  # joins CVAT's frame
    assert [list(s.points) for s in shapes] == logs.detections[["x1", "y1", "x2", "y2"]].values.tolist()
    ((_, record),) = RecordReader().read(log_path.read_text().splitlines())
    assert record["frame_name"] == "frame_000000.jpg"
    assert record["image"]["source_bytes"] is False  # the byte hash is of our PNG, not CVAT's file
    assert row.sha256 is None  # so the validator never tries it as a key
    assert not list(jsonschema.Draft202012Validator(schema()).iter_errors(record))


def test_an_sdk_without_attribute_shapes_fails_at_import_with_one_line(monkeypatch):
    """cvat-sdk < 2.31 has no select_attribute_spec: one line naming the minimum, not an AttributeError
    deep in the module (issue 18.17)."""
    monkeypatch.delattr(cvataa, "select_attribute_spec")
    with pytest.raises(ImportError) as err:
        load_module()
    (line,) = str(err.value).splitlines()
    assert "cvat-sdk >= 2.31" in line and "this is cvat-sdk 2.80.0" in line


def test_an_sdk_without_score_gets_unscored_rectangles(monkeypatch, tiny_checkpoint, person_detector_weights):
    """cvat-sdk 2.31-2.55 has attribute shapes but no ``score``: the module still works there."""
    import cvat_sdk.models as models

    without = {k: v for k, v in models.LabeledShapeRequest.attribute_map.items() if k != "score"}
    monkeypatch.setattr(models.LabeledShapeRequest, "attribute_map", without)
    module = load_module()
    assert module.HAS_SCORE is False
    function = module.create(
        model_path=str(tiny_checkpoint),
        detector_path=str(person_detector_weights),
        detector_arch="fasterrcnn_mobilenet_v3_large_320_fpn",
    )
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (120, 160, 3), dtype=np.uint8))
    shapes = function.detect(Context(0.8), image)
    assert shapes and all("score" not in s.to_dict() for s in shapes)
