"""The function's own pipeline in this process, for ``ropewatch annotate fill``: the boxes are given,
each frame is one request, and each writes the same ``inference`` record the Nuclio function writes
(``ropewatch_core.records``), so ``validate-job --logs`` joins the filled job like an auto-annotated one."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TextIO

import numpy as np

from ropewatch_core.errors import InputError
from ropewatch_core.image import ImageError
from ropewatch_core.model.pipeline import BoxError, Predictor
from ropewatch_core.records import INFERENCE, record_logger
from ropewatch_validator.ops.function_client import Classified


class FrameRefused(InputError):
    """The model could not take this frame (an image it cannot decode, a box outside the frame)."""


class LocalClassifier:
    """Classify given boxes with a checkpoint (and, optionally, the fast filter in front of it)."""

    def __init__(
        self, model: Path, records: TextIO, *, fast_filter: Path | None = None, device: str = "cpu"
    ) -> None:
        self.predictor = Predictor(
            str(model), None, device=device, filter_path=str(fast_filter) if fast_filter else None
        )
        self.log = record_logger("ropewatch-fill", records)

    def __call__(self, data: bytes, boxes: list[list[float]]) -> Classified:
        rid = str(uuid.uuid4())
        try:
            result = self.predictor.run(data, boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4))
        except (BoxError, ImageError) as exc:
            raise FrameRefused(str(exc)) from None
        self.log.info(INFERENCE, request_id=rid, **result.record_fields())
        return Classified(
            values=tuple(d.value for d in result.detections),
            p_correct=tuple(float(d.p_correct) for d in result.detections),
            request_id=rid,
            model_version=result.checkpoint.version,
        )
