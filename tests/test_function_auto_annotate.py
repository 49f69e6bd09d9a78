"""The cvat-sdk auto-annotation module: same spec as function.yaml, score and attribute on each rectangle."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cvat_sdk.auto_annotation as cvataa
import numpy as np
from PIL import Image

from ropewatch_core.spec import ATTRIBUTE_VALUES, cvat_spec

PATH = Path(__file__).resolve().parents[1] / "functions" / "safety_rope" / "auto_annotate.py"


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
