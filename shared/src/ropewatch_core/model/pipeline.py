"""Predictor: frame bytes → persons → rope decision, with the checkpoints hot-swapped from disk.

Both model files (the expert and, when given, the fast filter) are watched by ropewatch_core.model.hotswap:
a new file is validated before it replaces the served model, a broken one is reported once and the old
model keeps serving.

With a fast filter the decision is a cascade (ropewatch_core.cascade): the filter scores every person,
those outside its band are decided there, and all deferred persons of the frame share one expert pass;
a frame with none deferred makes no expert pass. ``shadow_rate`` runs the expert anyway on that share of
the filter-decided persons (drawn independently per person) and keeps both answers for the log.

Given boxes are clipped to the frame; one with less than a pixel inside is refused (BoxError). A
non-finite logit is never served (ModelOutputError).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ropewatch_core.cascade import EXPERT, FILTER, deferred, filter_values
from ropewatch_core.decision import decide
from ropewatch_core.errors import InputError, ServiceError
from ropewatch_core.image import MAX_PIXELS, Frame, ImageError, load_frame
from ropewatch_core.model.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from ropewatch_core.model.classifier import prepare
from ropewatch_core.model.detector import PersonDetector
from ropewatch_core.model.fast_filter import FastFilter, load_filter
from ropewatch_core.model.hotswap import HotSwap
from ropewatch_core.records import detection_fields, inference_fields
from ropewatch_core.spec import ATTRIBUTE, PERSON_LABEL

MIN_BOX = 1.0  # pixels: a given box must keep at least this width and height inside the frame
MAX_ASPECT = 20  # the detector resizes the short side to 800 px and the long one to at most 1333 px;
# a frame thinner than 1:20 (e.g. 1x4000) would shrink to zero pixels on its short side


class DetectorUnavailable(ServiceError):
    """A request without boxes reached a function deployed without DETECTOR_PATH."""


class BoxError(InputError):
    """A given box with (almost) nothing inside the frame; the client's fault (400 ``bad_boxes``)."""

    code = "bad_boxes"


class ModelOutputError(ServiceError):
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
    stage: str = EXPERT  # which model decided: ``filter`` (p_correct/logit are the filter's) or ``expert``
    p_filter: float | None = None  # the filter's P(correct) whenever a filter is deployed
    shadow: dict | None = None  # the expert's answer for a shadow-sampled filter-decided person

    def log_fields(self) -> dict:
        return detection_fields(
            self.box,
            self.value,
            self.p_correct,
            self.logit,
            self.detector_score,
            stage=self.stage,
            p_filter=self.p_filter,
            shadow=self.shadow,
        )

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
    fast_filter: FastFilter | None = None
    expert_calls: int = 0  # expert backbone passes this request made (0 or 1)

    def record_fields(self) -> dict:
        """The ``inference`` record's fields (ropewatch_core.records), the same for both entry points."""
        ckpt, filt = self.checkpoint, self.fast_filter
        fields = inference_fields(
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
        return fields if filt is None else {**fields, **filter_fields(filt)}


def filter_fields(filt: FastFilter) -> dict:
    """The fast filter a record was decided with (records of a function without one have none)."""
    return {
        "filter_version": filt.version,
        "filter_sha256": filt.sha256,
        "filter_band": list(filt.band),
        "filter_temperature": filt.temperature,
    }


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
        on_reload_error: Callable[[CheckpointError], None] | None = None,
        filter_path: str | None = None,
        shadow_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.detector, self.device = detector, torch.device(device)
        self.detector_threshold, self.max_pixels = float(detector_threshold), int(max_pixels)
        if not 0.0 <= shadow_rate <= 1.0:
            raise ValueError(f"shadow rate must be in [0, 1], got {shadow_rate}")
        self.shadow_rate, self._rng = float(shadow_rate), random.Random(seed)
        # on_reload_error gets the CheckpointError of a rejected new file; a bad file at start is fatal
        self._expert = HotSwap(model_path, lambda p: load_checkpoint(p, device), on_reload_error)
        self._filter = (
            HotSwap(filter_path, lambda p: load_filter(p, device), on_reload_error) if filter_path else None
        )

    @property
    def checkpoint(self) -> Checkpoint:
        return self._expert.value

    @property
    def fast_filter(self) -> FastFilter | None:
        return None if self._filter is None else self._filter.value

    def current(self) -> Checkpoint:
        """The expert to serve now (see ropewatch_core.model.hotswap)."""
        return self._expert.current()

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

    def decide(
        self, ckpt: Checkpoint, filt: FastFilter | None, rgb: np.ndarray, boxes: np.ndarray, timings: dict
    ) -> tuple[list[dict[str, Any]], int]:
        """Per person ``value, p_correct, logit, stage, p_filter, shadow`` and the expert passes made."""
        n = len(boxes)
        if filt is None:
            t0 = time.perf_counter()
            z, p, values = self.classify(ckpt, rgb, boxes)
            timings["classify"] = _ms(t0)
            rows: list[dict[str, Any]] = [
                dict(value=v, p_correct=float(pi), logit=float(zi), stage=EXPERT, p_filter=None, shadow=None)
                for v, pi, zi in zip(values, p, z)
            ]
            return rows, int(n > 0)
        t0 = time.perf_counter()
        fz, fp = filt.p_correct(rgb, boxes)
        timings["filter"] = _ms(t0)
        by_filter = filter_values(fp, filt.band)
        rows = [
            dict(value=v, p_correct=float(pi), logit=float(zi), stage=FILTER, p_filter=float(pi), shadow=None)
            for v, pi, zi in zip(by_filter, fp, fz)
        ]
        shadowed = [i for i in range(n) if by_filter[i] is not None and self._rng.random() < self.shadow_rate]
        ask = sorted(set(np.flatnonzero(deferred(fp, filt.band)).tolist()) | set(shadowed))
        if not ask:
            return rows, 0
        t0 = time.perf_counter()
        z, p, values = self.classify(ckpt, rgb, boxes[ask])  # one expert pass for the whole frame
        timings["classify"] = _ms(t0)
        for i, v, pi, zi in zip(ask, values, p, z):
            expert = {"value": v, "p_correct": round(float(pi), 6), "logit": round(float(zi), 6)}
            if by_filter[i] is None:
                rows[i].update(value=v, p_correct=float(pi), logit=float(zi), stage=EXPERT)
            else:
                rows[i]["shadow"] = expert
        return rows, 1

    def run(self, data: bytes, boxes: np.ndarray | None = None, threshold: float | None = None) -> Result:
        """One request: decode, detect (unless ``boxes`` given), then filter and/or expert (one pass)."""
        t_total = time.perf_counter()
        ckpt = self.current()
        filt = None if self._filter is None else self._filter.current()
        t0 = time.perf_counter()
        frame = load_frame(data, self.max_pixels)
        timings = {"decode": _ms(t0)}
        thr_det = self.detector_threshold if threshold is None else float(threshold)
        given = boxes is not None
        t0 = time.perf_counter()
        if boxes is None:
            if self.detector is None:
                raise DetectorUnavailable("no person detector configured (DETECTOR_PATH); send 'boxes'")
            if max(frame.width, frame.height) > MAX_ASPECT * min(frame.width, frame.height):
                raise ImageError(
                    "image_invalid",
                    f"a {frame.width}x{frame.height} frame is too thin for the person detector "
                    f"(sides at most {MAX_ASPECT}:1); send 'boxes'",
                )
            boxes, scores = self.detector.detect(frame.rgb, thr_det)
            det_scores: list[float | None] = [round(float(s), 6) for s in scores]
            rounded = np.round(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), 2)
        else:
            det_scores = [None] * len(boxes)
            rounded = clip_boxes(boxes, frame.width, frame.height)
        timings["detect"] = _ms(t0)
        rows, expert_calls = self.decide(ckpt, filt, frame.rgb, rounded, timings)
        detections = [
            Detection(box=[float(v) for v in box], detector_score=score, **row)
            for box, row, score in zip(rounded, rows, det_scores)
        ]
        timings["total"] = _ms(t_total)
        return Result(
            frame=frame,
            checkpoint=ckpt,
            detections=detections,
            detector_threshold=thr_det,
            boxes_given=given,
            timings_ms=timings,
            fast_filter=filt,
            expert_calls=expert_calls,
        )
