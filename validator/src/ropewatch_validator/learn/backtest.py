"""The torch half of `ropewatch backtest`: run expert checkpoints, fast filters and person detectors on
the reference frames, each frame decoded once, every answer cached on disk.

Experts and filters get the reference boxes (the function's given-boxes path: boxes clipped to the
frame as ``pipeline.clip_boxes`` does, the frame resized by ``classifier.prepare``, P(correct) by
``ropewatch_core.decision``), so the classifier is judged alone. Detectors get the bare frame.

The score cache is one JSON-lines file (:data:`CACHE_NAME`) under the cache folder, one line per
(model sha256 and device, frame sha256, boxes digest), appended as each frame is done: a run killed at any
point (``kill -9``) resumes where it stopped, a cut last line is ignored, and a new version is the only
one that gets scored when added to an earlier backtest. The expert of a cascade shares its cache lines
with the same expert judged alone. Each line keeps the milliseconds the model took on that frame, so the
timing of a resumed run is still the model's own.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from ropewatch_core.decision import decide
from ropewatch_core.errors import InputError
from ropewatch_core.image import ImageError, bytes_fingerprint, load_frame
from ropewatch_core.model.checkpoint import Checkpoint, file_sha256, load_checkpoint
from ropewatch_core.model.classifier import prepare
from ropewatch_core.model.detector import ARCHITECTURES, TorchvisionPersonDetector
from ropewatch_core.model.fast_filter import FastFilter, load_filter
from ropewatch_core.model.pipeline import BoxError, clip_boxes

CACHE_NAME = "backtest-scores.jsonl"
DETECT_FLOOR = 0.05  # detections kept (and cached) down to this score: AP needs the low-score tail


@dataclass(frozen=True)
class Candidate:
    """One version to judge: an expert checkpoint, its threshold if given, and optionally the fast
    filter in front of it with the band to use (default: the filter's own)."""

    path: Path
    thr: float | None = None
    filter_path: Path | None = None
    band: tuple[float, float] | None = None


@dataclass(frozen=True)
class DetectorSpec:
    arch: str
    weights: Path

    @classmethod
    def parse(cls, text: str) -> DetectorSpec:
        """``ARCH:WEIGHTS`` (the function's DETECTOR_ARCH and DETECTOR_PATH)."""
        arch, sep, weights = text.partition(":")
        if not sep or not weights or arch not in ARCHITECTURES:
            raise InputError(
                f"--with-detector takes ARCH:WEIGHTS, ARCH one of {', '.join(ARCHITECTURES)}; got {text!r}"
            )
        if not Path(weights).is_file():
            raise InputError(f"--with-detector {text}: no such weights file")
        return cls(arch, Path(weights))


class FrameToScore(Protocol):
    """One frame: its reference boxes (x1, y1, x2, y2 rows) and how to get its bytes (the frame cache)."""

    @property
    def boxes(self) -> np.ndarray: ...

    @property
    def fetch(self) -> Callable[[], bytes]: ...


@dataclass
class Loaded:
    """A candidate's models, loaded and validated."""

    expert: Checkpoint
    filter: FastFilter | None
    band: tuple[float, float] | None


@dataclass(frozen=True)
class FrameScores:
    """What every model said on one frame: P(correct) per box (None: box outside the frame) by model
    sha256, detections (x1, y1, x2, y2, score rows) by detector key, ms by model, or the frame's error."""

    p: dict[str, list[float | None]] = field(default_factory=dict)
    detections: dict[str, list[list[float]]] = field(default_factory=dict)
    ms: dict[str, float] = field(default_factory=dict)
    error: str | None = None


def load(candidates: Sequence[Candidate], device: str = "cpu") -> list[Loaded]:
    """Every candidate's expert (a file without thr loads; the backtest gives it one) and filter."""
    out = []
    for c in candidates:
        expert = load_checkpoint(c.path, device, thr=c.thr, require_thr=False)
        filt = load_filter(c.filter_path, device) if c.filter_path is not None else None
        band = c.band if c.band is not None else (filt.band if filt is not None else None)
        out.append(Loaded(expert, filt, band))
    return out


def detector_key(spec: DetectorSpec, device: str) -> str:
    """The cache key of a detector: its architecture, the sha256 of its weights file and the device."""
    return f"{spec.arch}:{file_sha256(spec.weights)}@{device}"


def boxes_digest(boxes: np.ndarray) -> str:
    return hashlib.sha256(np.round(np.asarray(boxes, np.float64), 2).tobytes()).hexdigest()[:16]


class ScoreCache:
    """The JSON-lines cache; lines are (model, frame, boxes) -> answer."""

    def __init__(self, folder: Path | None) -> None:
        self.path = None if folder is None else Path(folder) / CACHE_NAME
        self.rows: dict[tuple[str, str, str], dict] = {}
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                    self.rows[(row["model"], row["frame"], row["boxes"])] = row
                except (ValueError, KeyError, TypeError):  # a line cut by a killed run
                    continue

    def get(self, model: str, frame: str, boxes: str) -> dict | None:
        return self.rows.get((model, frame, boxes))

    def put(self, row: dict) -> None:
        self.rows[(row["model"], row["frame"], row["boxes"])] = row
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(
                self.path, "a", encoding="utf-8"
            ) as sink:  # closed: in the OS's hands, survives kill -9
                sink.write(json.dumps(row) + "\n")
        except OSError as exc:
            raise InputError(f"cannot write the score cache {self.path}: {exc.strerror or exc}") from None


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000.0, 3)


@torch.inference_mode()
def _expert_p(ckpt: Checkpoint, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """P(correct) of every box, as the function's Predictor.classify computes it."""
    device = next(ckpt.model.parameters()).device
    image, rois = prepare(rgb, boxes, ckpt.config, device)
    logits = ckpt.model(image, rois).float().cpu().numpy()
    return decide(logits, ckpt.labels, 0.5, ckpt.temperature)[1]  # thr plays no part in P


def _filter_p(filt: FastFilter, rgb: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    return filt.p_correct(rgb, boxes)[1]


def _clipped(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, list[int]]:
    """The boxes the function would classify (clipped, rounded) and the indices it would refuse."""
    out, refused = np.zeros((len(boxes), 4)), []
    for i, box in enumerate(np.asarray(boxes, np.float64).reshape(-1, 4)):
        try:
            out[i] = clip_boxes(box[None], width, height)[0]
        except BoxError:
            refused.append(i)
    return out, refused


def model_key(sha256: str, device: str) -> str:
    """A model's cache key: its file's sha256 on a device (timings and float rounding are the device's)."""
    return f"{sha256}@{device}"


class Scorer:
    """Runs the models of ``loaded`` and ``detectors`` on frames on ``device``, through ``cache``;
    answers are keyed by :func:`model_key` and :func:`detector_key`."""

    def __init__(
        self,
        loaded: Sequence[Loaded],
        detectors: Sequence[DetectorSpec],
        cache: ScoreCache,
        device: str = "cpu",
    ) -> None:
        self.cache, self.device = cache, device
        self.models: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {}
        for item in loaded:
            expert = item.expert
            self.models.setdefault(model_key(expert.sha256, device), partial(_expert_p, expert))
            if item.filter is not None:
                key = model_key(item.filter.sha256, device)
                self.models.setdefault(key, partial(_filter_p, item.filter))
        self.detectors = {detector_key(d, device): d for d in detectors}
        self._built: dict[str, TorchvisionPersonDetector] = {}

    def _detector(self, key: str) -> TorchvisionPersonDetector:
        if key not in self._built:
            spec = self.detectors[key]
            self._built[key] = TorchvisionPersonDetector(spec.weights, spec.arch, self.device)
        return self._built[key]

    def score(self, frame: FrameToScore) -> FrameScores:
        """Every model's answer on one frame; the frame is decoded only if something is not cached."""
        data = frame.fetch()
        fsha, bdig = bytes_fingerprint(data), boxes_digest(frame.boxes)
        rgb: np.ndarray | None = None
        out = FrameScores()
        todo = [m for m in self.models if self.cache.get(m, fsha, bdig) is None]
        todo += [d for d in self.detectors if self.cache.get(d, fsha, "") is None]
        if todo:
            try:
                rgb = load_frame(data).rgb
            except ImageError as exc:
                return FrameScores(error=f"frame_undecodable ({exc})")
        for model, run in self.models.items():
            row = self.cache.get(model, fsha, bdig)
            if row is None:
                assert rgb is not None
                boxes, refused = _clipped(frame.boxes, rgb.shape[1], rgb.shape[0])
                keep = [i for i in range(len(boxes)) if i not in refused]
                t0 = time.perf_counter()
                p = run(rgb, boxes[keep]) if keep else np.zeros(0)
                values: list[float | None] = [None] * len(boxes)
                for i, pi in zip(keep, p):
                    values[i] = round(float(pi), 7)
                row = {"model": model, "frame": fsha, "boxes": bdig, "p": values, "ms": _ms(t0)}
                self.cache.put(row)
            out.p[model], out.ms[model] = row["p"], float(row["ms"])
        for key in self.detectors:
            row = self.cache.get(key, fsha, "")
            if row is None:
                assert rgb is not None
                t0 = time.perf_counter()
                found, scores = self._detector(key).detect(rgb, DETECT_FLOOR)
                det = [[*(round(float(v), 2) for v in b), round(float(s), 6)] for b, s in zip(found, scores)]
                row = {"model": key, "frame": fsha, "boxes": "", "det": det, "ms": _ms(t0)}
                self.cache.put(row)
            out.detections[key], out.ms[key] = row["det"], float(row["ms"])
        return out


def score_all(
    loaded: Sequence[Loaded],
    detectors: Sequence[DetectorSpec],
    frames: Sequence[FrameToScore],
    cache_dir: Path | None,
    advance: Callable[[int], None] | None = None,
    device: str = "cpu",
) -> Iterator[FrameScores]:
    """:class:`FrameScores` of every frame, in order (``advance(1)`` after each)."""
    scorer = Scorer(loaded, detectors, ScoreCache(cache_dir), device)
    for frame in frames:
        yield scorer.score(frame)
        if advance is not None:
            advance(1)


def device_info(device: str = "cpu") -> dict[str, Any]:
    """Where the models ran (the card's timing line): the device, with the GPU's name on CUDA."""
    name = device
    if device.startswith("cuda") and torch.cuda.is_available():
        name = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return {"device": name, "torch_threads": int(torch.get_num_threads())}


def check_device(device: str) -> None:
    """A device torch can use here, or one InputError line."""
    try:
        torch.zeros(1, device=device)
    except (RuntimeError, AssertionError) as exc:  # torch's own "not compiled with CUDA" is an AssertionError
        raise InputError(f"--device {device}: {' '.join(str(exc).split())[:160]}") from None


def head_of(ckpt: Checkpoint) -> str:
    last = ckpt.model.head[-1]
    return f"Linear({last.in_features}, {last.out_features})"
