"""Nuclio entry of the safety-rope function that CVAT calls from "Automatic annotation".

Nuclio imports this module under a connect deadline, so the module itself imports only the standard
library; torch, the checkpoint and the detector are loaded in ``init_context``. Configuration (env):
MODEL_PATH (checkpoint, required), DETECTOR_PATH (person detector state dict; without it requests must
send ``boxes``), DETECTOR_ARCH, DETECTOR_MIN_SIZE/DETECTOR_MAX_SIZE (the detector's resize in pixels:
shorter side scaled to MIN, longer side capped at MAX; default the architecture's own, 800/1333 for the
default detector), DEVICE (cpu|cuda), DETECTOR_THRESHOLD, MAX_PIXELS, NUM_WORKERS (the trigger's
numWorkers), TORCH_THREADS (default: usable cores / NUM_WORKERS); FILTER_PATH (fast-filter checkpoint:
the cascade in front of the expert) and SHADOW_RATE (share of filter-decided persons the expert checks
anyway, logged as ``shadow``; default 0).

Every record (``inference``, ``request_failed``, ``model_loaded``, ``init_failed``...) goes through
ropewatch_core.records, which writes each line atomically to the stdout pipe the workers share.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid

from ropewatch_core.errors import InputError, RopewatchError
from ropewatch_core.jsonio import finite_number

MAX_BOXES = 1000
MAX_COORD = 1e6  # beyond any frame; keeps expanded boxes finite so the response stays valid JSON
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class InvalidRequest(InputError):
    """A request body the function refuses (HTTP 400); ``code`` is the record's ``error`` field."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def init_context(context) -> None:
    """Load the model once per worker. A failure is written as one ``init_failed`` record with its
    reason before it propagates: Nuclio itself logs only "Exception raised while running init_context"."""
    from ropewatch_core.records import record_logger

    log = record_logger(_worker_id(context))
    try:
        _init(context, log)
    except BaseException as exc:
        log.error("init_failed", **init_failure(exc))
        raise


def init_failure(exc: BaseException) -> dict:
    """``error`` and ``message`` of the init_failed record: our own errors are already one line naming the
    file; a missing env var is named; anything else is ``Type: text`` cut short."""
    from ropewatch_core.records import one_line

    if isinstance(exc, RopewatchError):
        return {"error": _init_error_code(exc), "message": str(exc)[:500]}
    if isinstance(exc, KeyError):
        return {"error": "bad_config", "message": f"{exc.args[0]} is not set"}
    return {"error": "bad_config" if isinstance(exc, ValueError) else "init_error", "message": one_line(exc)}


def _init_error_code(exc: RopewatchError) -> str:
    # an error of the model package means it is imported already: importing its classes loads nothing
    from ropewatch_core.model.checkpoint import CheckpointError
    from ropewatch_core.model.detector import DetectorError

    if isinstance(exc, CheckpointError):
        return "bad_checkpoint"
    return "bad_detector" if isinstance(exc, DetectorError) else "bad_config"


def cpu_quota(cpu_max: str) -> int | None:
    """Cores granted by a cgroup v2 ``cpu.max`` line (``"200000 100000"`` → 2; ``"max 100000"`` → None)."""
    quota, _, period = cpu_max.strip().partition(" ")
    if quota == "max" or not quota.isdigit() or not period.isdigit() or int(period) == 0:
        return None
    return max(1, -(-int(quota) // int(period)))


def usable_cpus() -> int:
    """Cores this process may run on: its affinity mask, capped by a cgroup v2 CPU quota (docker --cpus)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:
            quota = cpu_quota(fh.read())
    except OSError:
        quota = None
    return min(cpus, quota) if quota else cpus


def env_number(
    env: dict | os._Environ,
    name: str,
    default: float,
    low: float,
    high: float = math.inf,
    integer: bool = False,
) -> float:
    """The number in env variable ``name`` (``default`` when unset or empty), within [low, high]; anything
    else is a ValueError naming the variable, so the init_failed record says which setting is wrong."""
    text = env.get(name) or ""
    if not text.strip():
        return default
    try:
        value = float(int(text)) if integer else float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        kind = "an integer" if integer else "a number"
        span = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise ValueError(f"{name} must be {kind} {span}, got {text[:40]!r}")
    return value


def torch_threads(env: dict | os._Environ, cpus: int) -> int:
    """TORCH_THREADS, else the usable cores shared out over the NUM_WORKERS workers (at least 1): every
    worker is a process, and torch's default (all cores each) oversubscribes the CPU."""
    if env.get("TORCH_THREADS"):
        return int(env_number(env, "TORCH_THREADS", 1, 1, integer=True))
    return max(1, cpus // int(env_number(env, "NUM_WORKERS", 1, 1, integer=True)))


def detector_sizes(
    env: dict | os._Environ, arch: str, fixed: tuple[str, ...]
) -> tuple[int | None, int | None]:
    """DETECTOR_MIN_SIZE and DETECTOR_MAX_SIZE as whole pixels in [32, 4096] (None when unset: the
    architecture's own); a bad value, or a size for an architecture in ``fixed`` (one input size), is a
    ValueError naming the variable (-> init_failed bad_config)."""
    sizes: list[int | None] = []
    for name in ("DETECTOR_MIN_SIZE", "DETECTOR_MAX_SIZE"):
        text = str(env.get(name) or "").strip()
        if not text:
            sizes.append(None)
            continue
        if not text.isdigit() or not 32 <= int(text) <= 4096:
            raise ValueError(f"{name} must be a whole number of pixels from 32 to 4096, got {text[:40]!r}")
        if arch in fixed:
            raise ValueError(f"{name} is set, but DETECTOR_ARCH {arch} has one fixed input size")
        sizes.append(int(text))
    low, high = sizes
    if low is not None and high is not None and low > high:
        raise ValueError(f"DETECTOR_MIN_SIZE {low} is larger than DETECTOR_MAX_SIZE {high}")
    return low, high


def _init(context, log) -> None:
    import torch

    from ropewatch_core.image import MAX_PIXELS
    from ropewatch_core.model.detector import DEFAULT_ARCH, FIXED_SIZE, TorchvisionPersonDetector
    from ropewatch_core.model.pipeline import Predictor, filter_fields

    env = os.environ
    threads = torch_threads(env, usable_cpus())  # every number read (and named when bad) before loading
    detector_threshold = env_number(env, "DETECTOR_THRESHOLD", 0.5, 0.0, 1.0)
    max_pixels = int(env_number(env, "MAX_PIXELS", MAX_PIXELS, 1, integer=True))
    shadow_rate = env_number(env, "SHADOW_RATE", 0.0, 0.0, 1.0)
    torch.set_num_threads(threads)
    device = env.get("DEVICE", "cpu")
    arch = env.get("DETECTOR_ARCH", DEFAULT_ARCH)
    min_size, max_size = detector_sizes(env, arch, FIXED_SIZE)
    detector = (
        TorchvisionPersonDetector(env["DETECTOR_PATH"], arch, device, min_size, max_size)
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
        detector_threshold=detector_threshold,
        max_pixels=max_pixels,
        on_reload_error=reload_failed,
        filter_path=env.get("FILTER_PATH") or None,
        shadow_rate=shadow_rate,
    )
    context.user_data.predictor = predictor
    context.user_data.log = log
    if hasattr(context.platform, "set_termination_callback"):  # the wrapper's has; nuclio_sdk.test's not
        context.platform.set_termination_callback(lambda: log.info("worker_terminating"))  # on SIGUSR1
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
        detector_min_size=None if detector is None else detector.sizes[0],
        detector_max_size=None if detector is None else detector.sizes[1],
        torch_threads=threads,
        **({} if predictor.fast_filter is None else filter_fields(predictor.fast_filter)),
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
        except RecursionError:
            raise InvalidRequest("body_not_json", "request body is not JSON: nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequest("body_not_json", f"request body is not JSON: {str(exc)[:200]}") from None
    if not isinstance(body, dict):
        raise InvalidRequest(
            "body_not_object", 'request body must be a JSON object {"image": ..., "threshold": ...}'
        )
    return body


def _echo(value: object) -> str:
    from ropewatch_core.records import echo

    return echo(value)


def parse_threshold(value: object) -> float | None:
    if value is None:
        return None
    if not finite_number(value) or not 0.0 <= value <= 1.0:
        raise InvalidRequest("bad_threshold", f"'threshold' must be a number in [0, 1], got {_echo(value)}")
    return float(value)


def parse_boxes(value: object) -> list[list[float]] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_BOXES:
        raise InvalidRequest("bad_boxes", f"'boxes' must be a list of at most {MAX_BOXES} [x1, y1, x2, y2]")
    for i, box in enumerate(value):
        if not (
            isinstance(box, list)
            and len(box) == 4
            and all(finite_number(v) for v in box)
            and all(abs(v) <= MAX_COORD for v in box)
            and box[2] > box[0]
            and box[3] > box[1]
        ):
            raise InvalidRequest(
                "bad_boxes",
                f"boxes[{i}] must be [x1, y1, x2, y2] numbers with x2 > x1 and y2 > y1, got {_echo(box)}",
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
    from ropewatch_core.model.pipeline import BoxError, DetectorUnavailable, ModelOutputError
    from ropewatch_core.records import INFERENCE, one_line

    rid = request_id(event)
    log = _logger(context).bind(request_id=rid)
    try:
        body = parse_body(event.body)
        threshold = parse_threshold(body.get("threshold"))
        boxes = parse_boxes(body.get("boxes"))
        data = decode_base64(body.get("image"))
        result = context.user_data.predictor.run(data, boxes=boxes, threshold=threshold)
    except (InvalidRequest, ImageError, BoxError) as exc:
        return _fail(context, log, rid, 400, exc.code, str(exc))
    except DetectorUnavailable as exc:
        return _fail(context, log, rid, 500, "detector_unavailable", str(exc))
    except ModelOutputError as exc:
        return _fail(context, log, rid, 500, "model_output_invalid", str(exc))
    except Exception as exc:  # the handler is the boundary: one line and a 500, never a traceback
        log.error("request_failed", error="internal_error", message=one_line(exc))
        return _json(
            context,
            500,
            {"error": "internal_error", "message": "internal error; see the function log", "request_id": rid},
            rid,
        )
    log.info(INFERENCE, **result.record_fields())
    return _json(context, 200, [d.cvat_shape() for d in result.detections], rid)


def _logger(context):
    """The worker's logger; a fresh one if init_context never ran, so even that failure is logged as JSON."""
    from ropewatch_core.records import record_logger

    log = getattr(context.user_data, "log", None)
    return log if log is not None else record_logger(_worker_id(context))


def _worker_id(context) -> str:
    return str(context.worker_id if context.worker_id is not None else f"pid-{os.getpid()}")


def _fail(context, log, rid: str, status: int, code: str, message: str):
    log.error("request_failed", error=code, message=message)
    return _json(context, status, {"error": code, "message": message, "request_id": rid}, rid)
