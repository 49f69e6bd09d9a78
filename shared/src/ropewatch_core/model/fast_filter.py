"""The fast filter: a small timm image classifier (one logit = P(correct)) on each expanded person crop.

It sits in front of the expert (ropewatch_core.model.classifier): persons whose calibrated
P(correct) = σ(z/T) lies outside the band (lo, hi) are decided here, the rest go to the expert.

Checkpoint contract (one torch.save dict, validated on load, every failure one CheckpointError line):
``state_dict``, ``model_name`` (timm name), ``img_size`` (square side of the crop input), ``expand``
(the expert's {x, y_top, y_bot} rule, so both see the same context), ``temperature`` (> 0) and
``band`` [lo, hi] with 0 <= lo <= hi <= 1; optional ``model_kwargs`` (timm kwargs, e.g. a tiny test
config), ``version``, ``metrics``, ``calibration``, ``epoch``, ``untrained``. Loading ends with a dry
forward pass whose logit must be finite, so hot-swap refuses a file that could not serve.

Crops are cut and resized by :func:`crop_boxes` and :func:`to_input`, the one implementation that
dataset building, training and serving share.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np
import torch
from torch import nn

from ropewatch_core.decision import p_correct
from ropewatch_core.jsonio import finite_number
from ropewatch_core.model.checkpoint import CheckpointError, load_weights, read_checkpoint
from ropewatch_core.model.classifier import expand_boxes

REQUIRED_KEYS = ("state_dict", "model_name", "img_size", "expand", "temperature", "band")
DEFAULT_MODEL = "mobilenetv4_hybrid_medium"
DEFAULT_EXPAND = {"x": 1.0, "y_top": 0.2, "y_bot": 1.5}  # the expert's default (ModelConfig.expand)
MAX_IMG = 1024


@dataclass
class FastFilter:
    """A loaded, validated filter checkpoint ready to serve."""

    path: str
    sha256: str
    model_name: str
    img_size: int
    expand: dict
    temperature: float
    band: tuple[float, float]
    model: nn.Module
    mean: torch.Tensor
    std: torch.Tensor
    version: str
    metrics: dict = field(default_factory=dict)

    @torch.inference_mode()
    def logits(self, crops: torch.Tensor) -> np.ndarray:
        """(N, 3, S, S) float crops in [0, 1] → (N,) logits z of P(correct)."""
        if crops.shape[0] == 0:
            return np.zeros(0)
        return self.model((crops - self.mean) / self.std).float().reshape(-1).cpu().numpy()

    def p_correct(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Logits and calibrated P(correct) = σ(z/T) for each person box of one frame."""
        z = self.logits(batch(rgb, boxes, self.expand, self.img_size))
        return z, p_correct(z, self.temperature)


def build_model(model_name: str, weights: str | os.PathLike | None = None, **kwargs: Any) -> nn.Module:
    """``timm.create_model(name, num_classes=1, pretrained=False)``; ``weights``: a local state dict
    (e.g. ImageNet weights copied onto the machine): every tensor whose name and shape fit is loaded, so
    a 1000-class head is left at its fresh 1-logit init."""
    import timm

    model = timm.create_model(model_name, pretrained=False, num_classes=1, **kwargs)
    if weights is not None:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state)
        own = model.state_dict()
        fitting = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
        if not fitting:
            raise ValueError(f"weights {weights}: no tensor fits {model_name}")
        model.load_state_dict(fitting, strict=False)
    return model


def norm_stats(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """The Normalize mean/std the model's timm config names (ImageNet's when it names none)."""
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean = cfg.get("mean", (0.485, 0.456, 0.406))
    std = cfg.get("std", (0.229, 0.224, 0.225))
    return torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)


def crop_boxes(boxes: np.ndarray, expand: dict, width: int, height: int) -> np.ndarray:
    """Integer pixel boxes of the expanded person (outward rounding, clipped; at least 1 px each way)."""
    e = expand_boxes(boxes, expand, width, height)
    out = np.stack([np.floor(e[:, 0]), np.floor(e[:, 1]), np.ceil(e[:, 2]), np.ceil(e[:, 3])], axis=1)
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    out[:, 2] = np.maximum(out[:, 2], np.minimum(out[:, 0] + 1, width))
    out[:, 3] = np.maximum(out[:, 3], np.minimum(out[:, 1] + 1, height))
    out[:, 0] = np.minimum(out[:, 0], out[:, 2] - 1)
    out[:, 1] = np.minimum(out[:, 1], out[:, 3] - 1)
    return out.astype(np.int64)


def to_input(crop: np.ndarray, size: int) -> torch.Tensor:
    """(h, w, 3) uint8 crop → (3, size, size) float in [0, 1] (bilinear, antialiased)."""
    from torch.nn import functional as F

    t = torch.from_numpy(np.array(crop, dtype=np.uint8, copy=True)).permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]


def batch(rgb: np.ndarray, boxes: np.ndarray, expand: dict, size: int) -> torch.Tensor:
    """All persons of one frame as one (N, 3, size, size) batch."""
    h, w = rgb.shape[:2]
    px = crop_boxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), expand, w, h)
    if len(px) == 0:
        return torch.zeros((0, 3, size, size))
    return torch.stack([to_input(rgb[y1:y2, x1:x2], size) for x1, y1, x2, y2 in px])


def _check(raw: object, fail: Callable[[str], NoReturn]) -> dict:
    """The checkpoint dict once every key is of the right kind (the weights are checked by the caller)."""
    if not isinstance(raw, dict):
        fail(f"expected a dict saved with torch.save, got {type(raw).__name__}")
    missing = [k for k in REQUIRED_KEYS if k not in raw]
    if missing:
        fail(f"missing {', '.join(repr(k) for k in missing)}")
    if not isinstance(raw["model_name"], str):
        fail(f"'model_name' must be a timm model name, got {str(raw['model_name'])[:80]}")
    size = raw["img_size"]
    if not (isinstance(size, int) and not isinstance(size, bool) and 8 <= size <= MAX_IMG):
        fail(f"'img_size' must be an integer in [8, {MAX_IMG}], got {str(size)[:40]}")
    expand = raw["expand"]
    if not (
        isinstance(expand, dict)
        and set(expand) <= {"x", "y_top", "y_bot"}
        and all(finite_number(v) and v >= 0 for v in expand.values())
    ):
        fail(f"'expand' must be {{x, y_top, y_bot}} non-negative numbers, got {str(expand)[:80]}")
    t = raw["temperature"]
    if not (finite_number(t) and t > 0):
        fail(f"'temperature' must be a positive number, got {str(t)[:40]}")
    band = raw["band"]
    if not (
        isinstance(band, (list, tuple))
        and len(band) == 2
        and all(finite_number(v) for v in band)
        and 0.0 <= band[0] <= band[1] <= 1.0
    ):
        fail(f"'band' must be [lo, hi] with 0 <= lo <= hi <= 1, got {str(band)[:80]}")
    if not isinstance(raw.get("model_kwargs", {}), dict):
        fail("'model_kwargs' must be a dict")
    state = raw["state_dict"]
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
        fail("'state_dict' must be a dict of tensors")
    return raw


def validate(raw: object, path: str, device: str = "cpu") -> nn.Module:
    """Check the dict, build the model, load the weights strictly and dry-run one crop; any failure is
    one CheckpointError naming ``path``."""

    def fail(problem: str) -> NoReturn:
        raise CheckpointError(f"filter checkpoint {path}: {problem}")

    raw = _check(raw, fail)
    import timm

    if not timm.is_model(raw["model_name"]):
        fail(f"unknown model {raw['model_name'][:80]!r} (not a timm model name)")
    try:
        model = build_model(raw["model_name"], **raw.get("model_kwargs", {}))
        load_weights(model, raw["state_dict"], raw["model_name"], fail)
        model = model.eval().to(device)
        size = raw["img_size"]
        with torch.inference_mode():
            out = model(torch.full((1, 3, size, size), 0.5, device=device))
    except CheckpointError:
        raise
    except Exception as exc:  # every way a file can break is one line for the operator
        text = " ".join(str(exc).split())[:300]
        fail(f"{type(exc).__name__}: {text}")
    if tuple(out.shape) != (1, 1):
        fail(f"dry forward pass gave output of shape {tuple(out.shape)}, not (1, 1)")
    if not bool(torch.isfinite(out).all()):
        fail("dry forward pass gave a non-finite logit (NaN or infinite weights?)")
    return model


def load_filter(path: str | os.PathLike, device: str = "cpu") -> FastFilter:
    """Read, validate and dry-run a filter checkpoint; any problem is one CheckpointError line."""
    path = str(path)
    raw, sha = read_checkpoint(path)
    model = validate(raw, path, device)
    mean, std = norm_stats(model)
    lo, hi = raw["band"]
    return FastFilter(
        path=path,
        sha256=sha,
        model_name=raw["model_name"],
        img_size=int(raw["img_size"]),
        expand=dict(raw["expand"]),
        temperature=float(raw["temperature"]),
        band=(float(lo), float(hi)),
        model=model,
        mean=mean.to(device),
        std=std.to(device),
        version=str(raw.get("version") or f"sha256:{sha[:12]}"),
        metrics=dict(raw.get("metrics") or {}) if isinstance(raw.get("metrics"), dict) else {},
    )


def new_checkpoint(
    model: nn.Module,
    model_name: str,
    img_size: int,
    expand: dict | None = None,
    *,
    model_kwargs: dict | None = None,
    temperature: float = 1.0,
    band: tuple[float, float] = (0.0, 1.0),
    version: str = "filter-untrained",
    **extra: Any,
) -> dict:
    """The checkpoint dict of ``model``; the default band [0, 1] decides only P = 0 or 1 (defers ~all)."""
    return {
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_name": model_name,
        "img_size": int(img_size),
        "expand": dict(expand or DEFAULT_EXPAND),
        "model_kwargs": dict(model_kwargs or {}),
        "temperature": float(temperature),
        "band": [float(band[0]), float(band[1])],
        "version": version,
        **extra,
    }


def describe(f: FastFilter) -> dict:
    return {
        "file": f.path,
        "sha256": f.sha256,
        "version": f.version,
        "model_name": f.model_name,
        "img_size": f.img_size,
        "expand": f.expand,
        "temperature": f.temperature,
        "band": list(f.band),
        "parameters": sum(p.numel() for p in f.model.parameters()),
        "metrics": f.metrics,
    }
