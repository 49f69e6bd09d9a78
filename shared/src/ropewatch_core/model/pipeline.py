"""Predictor: frame bytes → persons → rope decision, with the checkpoint hot-swapped from disk.

The checkpoint file is watched by (mtime, size); when either changes its sha256 is compared and a new
file is loaded and validated (dry forward pass included) before it replaces the served model. A file
that fails is reported once and the previous model keeps serving, so a bad rollout never takes the
function down. Given boxes are clipped to the frame; one with less than a pixel inside is refused.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ropewatch_core.decision import decide
from ropewatch_core.image import MAX_PIXELS, Frame, ImageError, load_frame
from ropewatch_core.model.checkpoint import Checkpoint, CheckpointError, file_sha256, load_checkpoint
from ropewatch_core.model.classifier import prepare
from ropewatch_core.model.detector import PersonDetector
from ropewatch_core.records import detection_fields, inference_fields, one_line
from ropewatch_core.spec import ATTRIBUTE, PERSON_LABEL

MIN_BOX = 1.0  # pixels: a given box must keep at least this width and height inside the frame
MAX_ASPECT = 20  # the detector resizes the short side to 800 px and the long one to at most 1333 px;
# a frame thinner than 1:20 (e.g. 1x4000) would shrink to zero pixels on its short side


class DetectorUnavailable(RuntimeError):
    """A request without boxes reached a function deployed without DETECTOR_PATH."""


class BoxError(ValueError):
    """A given box with (almost) nothing inside the frame; the client's fault (400 ``bad_boxes``)."""

    code = "bad_boxes"


class ModelOutputError(RuntimeError):
    """The model gave a non-finite logit: answered 500 rather than served or logged."""


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes clipped to the frame and rounded to 2 decimals (as logged and returned); BoxError names
    the first box with less than MIN_BOX pixels of width or height left."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.round(
        np.stack(
            [
                b[:, 0].clip(0, width),
                b[:, 1].clip(0, height),
                b[:, 2].clip(0, width),
                b[:, 3].clip(0, height),
            ],
            axis=1,
        ),
        2,
    )
    small = np.flatnonzero((out[:, 2] - out[:, 0] < MIN_BOX) | (out[:, 3] - out[:, 1] < MIN_BOX))
    if len(small):
        i = int(small[0])
        raise BoxError(
            f"boxes[{i}] {b[i].round(2).tolist()} keeps less than {MIN_BOX:g} pixel of width or "
            f"height inside the {width}x{height} frame"
        )
    return out


@dataclass
class Detection:
    box: list[float]
    value: str
    p_correct: float
    logit: float
    detector_score: float | None

    def log_fields(self) -> dict:
        return detection_fields(self.box, self.value, self.p_correct, self.logit, self.detector_score)

    def cvat_shape(self) -> dict:
        """CVAT's detector item; confidence is the detector score (1 for given boxes)."""
        return {
            "confidence": 1.0 if self.detector_score is None else self.detector_score,
            "label": PERSON_LABEL,
            "points": self.box,
            "type": "rectangle",
            "attributes": [{"name": ATTRIBUTE, "value": self.value}],
        }


@dataclass
class Result:
    frame: Frame
    checkpoint: Checkpoint
    detections: list[Detection]
    detector_threshold: float
    boxes_given: bool
    timings_ms: dict = field(default_factory=dict)

    def record_fields(self) -> dict:
        """The ``inference`` record's fields (ropewatch_core.records), the same for both entry points."""
        ckpt = self.checkpoint
        return inference_fields(
            model_version=ckpt.version,
            model_sha256=ckpt.sha256,
            thr=ckpt.thr,
            temperature=ckpt.temperature,
            image=self.frame.log_fields(),
            detector_threshold=self.detector_threshold,
            boxes_given=self.boxes_given,
            detections=[d.log_fields() for d in self.detections],
            timings_ms=self.timings_ms,
        )


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


class Predictor:
    def __init__(
        self,
        model_path: str,
        detector: PersonDetector | None = None,
        device: str = "cpu",
        detector_threshold: float = 0.5,
        max_pixels: int = MAX_PIXELS,
        on_reload_error=None,
    ) -> None:
        self.model_path, self.detector, self.device = str(model_path), detector, torch.device(device)
        self.detector_threshold, self.max_pixels = float(detector_threshold), int(max_pixels)
        self.on_reload_error = on_reload_error  # called with the CheckpointError of a rejected new file
        self._lock = threading.Lock()
        try:
            self._stat_key = self._stat()  # before loading: a change after this is seen by the next request
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {self.model_path}: no such file") from None
        except OSError as exc:
            raise CheckpointError(f"checkpoint {self.model_path}: {one_line(exc)}") from None
        self.checkpoint = load_checkpoint(self.model_path, device)  # a bad file at start-up is fatal
        self._rejected: tuple | None = None

    def _stat(self) -> tuple:
        st = os.stat(self.model_path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> Checkpoint:
        """The model to serve now: reloaded when the file changed, kept when the new file is broken."""
        with self._lock:
            try:
                key = self._stat()
            except OSError as exc:  # file moved away mid-rollout: keep serving
                key = ("missing", str(exc))
            if key == self._stat_key or key == self._rejected:
                return self.checkpoint
            try:
                if file_sha256(self.model_path) != self.checkpoint.sha256:
                    self.checkpoint = load_checkpoint(self.model_path, self.device)
                self._stat_key, self._rejected = key, None
            except Exception as exc:  # whatever breaks, the served model stays and the file is tried once
                self._rejected = key
                if self.on_reload_error is not None:
                    self.on_reload_error(
                        exc
                        if isinstance(exc, CheckpointError)
                        else CheckpointError(f"checkpoint {self.model_path}: {one_line(exc)}")
                    )
            return self.checkpoint

    @torch.inference_mode()
    def classify(
        self, ckpt: Checkpoint, rgb: np.ndarray, boxes: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        if len(boxes) == 0:
            return np.zeros(0), np.zeros(0), []
        image, rois = prepare(rgb, boxes, ckpt.config, self.device)
        logits = ckpt.model(image, rois).float().cpu().numpy()
        if not np.isfinite(logits).all():
            raise ModelOutputError(f"model {ckpt.version} gave a non-finite logit; nothing was served")
        return decide(logits, ckpt.labels, ckpt.thr, ckpt.temperature)

    def run(self, data: bytes, boxes: np.ndarray | None = None, threshold: float | None = None) -> Result:
        """One request: decode, detect (unless ``boxes`` given), classify all persons in one backbone pass."""
        t_total = time.perf_counter()
        ckpt = self.current()
        t0 = time.perf_counter()
        frame = load_frame(data, self.max_pixels)
        timings = {"decode": _ms(t0)}
        thr_det = self.detector_threshold if threshold is None else float(threshold)
        given = boxes is not None
        t0 = time.perf_counter()
        if not given:
            if self.detector is None:
                raise DetectorUnavailable("no person detector configured (DETECTOR_PATH); send 'boxes'")
            if max(frame.width, frame.height) > MAX_ASPECT * min(frame.width, frame.height):
                raise ImageError(
                    "image_invalid",
                    f"a {frame.width}x{frame.height} frame is too thin for the "
                    f"person detector (sides at most {MAX_ASPECT}:1); send 'boxes'",
                )
            boxes, scores = self.detector.detect(frame.rgb, thr_det)
            det_scores: list[float | None] = [round(float(s), 6) for s in scores]
            boxes = np.round(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), 2)
        else:
            det_scores = [None] * len(boxes)
            boxes = clip_boxes(boxes, frame.width, frame.height)
        timings["detect"] = _ms(t0)
        t0 = time.perf_counter()
        z, p, values = self.classify(ckpt, frame.rgb, boxes)
        timings["classify"] = _ms(t0)
        detections = [
            Detection(
                box=[float(v) for v in box],
                value=value,
                p_correct=float(pi),
                logit=float(zi),
                detector_score=score,
            )
            for box, value, pi, zi, score in zip(boxes, values, p, z, det_scores)
        ]
        timings["total"] = _ms(t_total)
        return Result(
            frame=frame,
            checkpoint=ckpt,
            detections=detections,
            detector_threshold=thr_det,
            boxes_given=given,
            timings_ms=timings,
        )
