"""The same classifier without Nuclio, for cvat-sdk's auto-annotation driver:

    cvat-cli task auto-annotate TASK --function-file functions/safety_rope/auto_annotate.py \
        -p model_path=str:/srv/models/rope.pt -p detector_path=str:/srv/models/person.pth

``-p detector_min_size=int:N -p detector_max_size=int:N`` set the detector's resize as the Nuclio
function's DETECTOR_MIN_SIZE/DETECTOR_MAX_SIZE do (0 or unset: the architecture's own sizes).

Each rectangle carries the detector's score (CVAT >= 2.56 stores it) and the ``safety_rope_use`` value.
Each frame also gets the same ``inference`` record the Nuclio function writes (ropewatch_core.records,
plus ``frame_name``), on stdout or appended to ``-p log_path=str:FILE``, so ``validate-job --logs`` traces
cvat-cli runs too.
"""

from __future__ import annotations

import io
import uuid

import cvat_sdk.auto_annotation as cvataa
import cvat_sdk.models as models
import PIL.Image

from ropewatch_core.records import INFERENCE, record_logger
from ropewatch_core.spec import ATTRIBUTE, ATTRIBUTE_VALUES, PERSON_LABEL

spec = cvataa.DetectionFunctionSpec(
    labels=[
        cvataa.label_spec(
            PERSON_LABEL,
            0,
            type="rectangle",
            attributes=[cvataa.select_attribute_spec(ATTRIBUTE, 0, list(ATTRIBUTE_VALUES))],
        ),
    ]
)


class SafetyRopeFunction:
    spec = spec

    def __init__(self, predictor, log) -> None:
        self.predictor, self.log = predictor, log

    def detect(
        self, context: cvataa.DetectionFunctionContext, image: PIL.Image.Image
    ) -> list[models.LabeledShapeRequest]:
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")  # lossless: the predictor decodes bytes like the Nuclio path
        result = self.predictor.run(buffer.getvalue(), threshold=context.conf_threshold)
        self.log.info(
            INFERENCE, request_id=str(uuid.uuid4()), frame_name=context.frame_name, **result.record_fields()
        )
        return [
            cvataa.rectangle(
                0,
                d.box,
                score=d.cvat_shape()["confidence"],
                attributes=[models.AttributeValRequest(spec_id=0, value=d.value)],
            )
            for d in result.detections
        ]


def create(
    model_path: str,
    detector_path: str,
    detector_arch: str = "",
    device: str = "cpu",
    detector_threshold: float = 0.5,
    log_path: str = "",
    detector_min_size: int = 0,
    detector_max_size: int = 0,
) -> SafetyRopeFunction:
    """Called by cvat-cli with the ``-p name=type:value`` parameters."""
    from ropewatch_core.model.detector import DEFAULT_ARCH, TorchvisionPersonDetector
    from ropewatch_core.model.pipeline import Predictor

    detector = TorchvisionPersonDetector(
        detector_path,
        detector_arch or DEFAULT_ARCH,
        device,
        detector_min_size or None,
        detector_max_size or None,
    )
    stream = open(log_path, "a", encoding="utf-8") if log_path else None  # noqa: SIM115 - lives with the run
    return SafetyRopeFunction(
        Predictor(model_path, detector, device=device, detector_threshold=detector_threshold),
        record_logger("cvat-cli", stream),
    )
