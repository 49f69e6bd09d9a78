"""Nuclio entry of the safety-rope function that CVAT calls from "Automatic annotation".

Nuclio imports this module under a connect deadline, so the module itself imports only the standard
library; torch, the checkpoint and the detector are loaded in ``init_context``. Configuration (env):
MODEL_PATH (checkpoint, required), DETECTOR_PATH (person detector state dict; without it requests must
send ``boxes``), DETECTOR_ARCH, DEVICE (cpu|cuda), DETECTOR_THRESHOLD, MAX_PIXELS, TORCH_THREADS;
FILTER_PATH (fast-filter checkpoint: the cascade in front of the expert) and SHADOW_RATE (share of
filter-decided persons the expert checks anyway, logged as ``shadow``; default 0).
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid

MAX_BOXES = 1000
MAX_COORD = 1e6  # beyond any frame; keeps expanded boxes finite so the response stays valid JSON
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class BadRequest(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def init_context(context) -> None:
    import torch

    from ropewatch_core.image import MAX_PIXELS
    from ropewatch_core.logs import function_logger
    from ropewatch_core.model.detector import DEFAULT_ARCH, TorchvisionPersonDetector
    from ropewatch_core.model.pipeline import Predictor

    env = os.environ
    if env.get("TORCH_THREADS"):
        torch.set_num_threads(int(env["TORCH_THREADS"]))
    device = env.get("DEVICE", "cpu")
    log = function_logger(_worker_id(context))
    detector = (
        TorchvisionPersonDetector(env["DETECTOR_PATH"], env.get("DETECTOR_ARCH", DEFAULT_ARCH), device)
        if env.get("DETECTOR_PATH")
        else None
    )

    def reload_failed(exc: Exception) -> None:
        log.error(
            "model_reload_failed",
            error="bad_checkpoint",
            message=str(exc),
            model_version=predictor.checkpoint.version,
            model_sha256=predictor.checkpoint.sha256,
        )

    predictor = Predictor(
        env["MODEL_PATH"],
        detector,
        device=device,
        detector_threshold=float(env.get("DETECTOR_THRESHOLD", 0.5)),
        max_pixels=int(env.get("MAX_PIXELS", MAX_PIXELS)),
        on_reload_error=reload_failed,
        filter_path=env.get("FILTER_PATH") or None,
        shadow_rate=float(env.get("SHADOW_RATE") or 0.0),
    )
    context.user_data.predictor = predictor
    context.user_data.log = log
    ckpt = predictor.checkpoint
    log.info(
        "model_loaded",
        model_version=ckpt.version,
        model_sha256=ckpt.sha256,
        labels=ckpt.labels,
        thr=ckpt.thr,
        temperature=ckpt.temperature,
        untrained=ckpt.untrained,
        device=device,
        detector=None if detector is None else detector.arch,
        **_filter_fields(predictor.fast_filter),
    )


def request_id(event) -> str:
    """The caller's X-Request-Id when it is a sane token, else a fresh UUID4 (event.id repeats per worker)."""
    given = event.get_header("X-Request-Id") if hasattr(event, "get_header") else None
    if isinstance(given, bytes):
        given = given.decode("latin-1")
    return given if isinstance(given, str) and _REQUEST_ID.match(given) else str(uuid.uuid4())


def parse_body(body: object) -> dict:
    """Nuclio hands a JSON body already decoded for application/json, else bytes or str."""
    if isinstance(body, (bytes, bytearray, str)):
        try:
            body = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest("body_not_json", f"request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest(
            "body_not_object", 'request body must be a JSON object {"image": ..., "threshold": ...}'
        )
    return body


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_threshold(value: object) -> float | None:
    if value is None:
        return None
    if not _number(value) or not 0.0 <= value <= 1.0:
        raise BadRequest("bad_threshold", f"'threshold' must be a number in [0, 1], got {value!r}")
    return float(value)


def parse_boxes(value: object) -> list[list[float]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_BOXES:
        raise BadRequest("bad_boxes", f"'boxes' must be a list of at most {MAX_BOXES} [x1, y1, x2, y2]")
    for i, box in enumerate(value):
        if not (
            isinstance(box, list)
            and len(box) == 4
            and all(_number(v) for v in box)
            and all(abs(v) <= MAX_COORD for v in box)
            and box[2] > box[0]
            and box[3] > box[1]
        ):
            raise BadRequest(
                "bad_boxes",
                f"boxes[{i}] must be [x1, y1, x2, y2] numbers with x2 > x1 and y2 > y1, got {box!r}",
            )
    return [[float(v) for v in box] for box in value]


def _json(context, status: int, payload: object, rid: str):
    return context.Response(
        body=json.dumps(payload),
        headers={"X-Request-Id": rid},
        content_type="application/json",
        status_code=status,
    )


def handler(context, event):
    from ropewatch_core.image import ImageError, decode_base64
    from ropewatch_core.model.pipeline import DetectorUnavailable

    rid = request_id(event)
    log = _logger(context).bind(request_id=rid)
    try:
        body = parse_body(event.body)
        threshold = parse_threshold(body.get("threshold"))
        boxes = parse_boxes(body.get("boxes"))
        data = decode_base64(body.get("image"))
        result = context.user_data.predictor.run(data, boxes=boxes, threshold=threshold)
    except (BadRequest, ImageError) as exc:
        return _fail(context, log, rid, 400, exc.code, str(exc))
    except DetectorUnavailable as exc:
        return _fail(context, log, rid, 500, "detector_unavailable", str(exc))
    except Exception as exc:
        log.error("request_failed", error="internal_error", message=f"{type(exc).__name__}: {exc}")
        return _json(
            context,
            500,
            {"error": "internal_error", "message": "internal error; see the function log", "request_id": rid},
            rid,
        )
    ckpt = result.checkpoint
    log.info(
        "inference",
        model_version=ckpt.version,
        model_sha256=ckpt.sha256,
        thr=ckpt.thr,
        temperature=ckpt.temperature,
        image=result.frame.log_fields(),
        detector_threshold=result.detector_threshold,
        boxes_given=result.boxes_given,
        detections=[d.log_fields() for d in result.detections],
        timings_ms=result.timings_ms,
        **_filter_fields(result.fast_filter),
    )
    return _json(context, 200, [d.cvat_shape() for d in result.detections], rid)


def _filter_fields(filt) -> dict:
    """The fast filter a record was decided with (nothing when the function runs without one)."""
    if filt is None:
        return {}
    return {
        "filter_version": filt.version,
        "filter_sha256": filt.sha256,
        "filter_band": list(filt.band),
        "filter_temperature": filt.temperature,
    }


def _logger(context):
    """The worker's logger; a fresh one if init_context never ran, so even that failure is logged as JSON."""
    from ropewatch_core.logs import function_logger

    log = getattr(context.user_data, "log", None)
    return log if log is not None else function_logger(_worker_id(context))


def _worker_id(context) -> str:
    return str(context.worker_id if context.worker_id is not None else f"pid-{os.getpid()}")


def _fail(context, log, rid: str, status: int, code: str, message: str):
    log.error("request_failed", error=code, message=message)
    return _json(context, status, {"error": code, "message": message, "request_id": rid}, rid)
