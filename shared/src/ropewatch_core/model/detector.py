"""Person detectors. Anything with ``detect(rgb, threshold) -> (boxes, scores)`` plugs in.

The shipped one is a torchvision detection architecture trained on COCO (class 1 = person), built
with ``weights=None`` and loaded from a local state-dict file: no hub download ever happens.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

import numpy as np
import torch

from ropewatch_core.errors import InputError

COCO_PERSON = 1
ARCHITECTURES = (
    "fasterrcnn_mobilenet_v3_large_fpn",
    "fasterrcnn_mobilenet_v3_large_320_fpn",
    "ssdlite320_mobilenet_v3_large",
    "fasterrcnn_resnet50_fpn",
)
DEFAULT_ARCH = "fasterrcnn_mobilenet_v3_large_fpn"
FIXED_SIZE = ("ssdlite320_mobilenet_v3_large",)  # SSD resizes every frame to one fixed size (320x320)


class DetectorError(InputError):
    """Detector weights that cannot be loaded; the message names the file."""


class PersonDetector(Protocol):
    def detect(self, rgb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Person boxes (N, 4) as x1, y1, x2, y2 in frame pixels and their scores (N,), score >= threshold."""
        ...


def build_architecture(
    arch: str, min_size: int | None = None, max_size: int | None = None
) -> torch.nn.Module:
    """The architecture with random weights; ``min_size``/``max_size`` replace its transform's resize
    sizes (shorter side scaled to ``min_size``, longer side capped at ``max_size``; None keeps the
    architecture's own: 800/1333, or 320/640 for the ``_320_`` variant). Weights do not depend on them."""
    from torchvision.models import detection

    if arch not in ARCHITECTURES:
        raise DetectorError(f"unknown detector architecture {arch!r}; one of {', '.join(ARCHITECTURES)}")
    sizes = {k: v for k, v in (("min_size", min_size), ("max_size", max_size)) if v is not None}
    if sizes and arch in FIXED_SIZE:
        raise DetectorError(f"{arch} resizes every frame to a fixed 320x320: it takes no min/max size")
    # box_score_thresh low: the request's threshold filters afterwards, so one model serves every threshold
    extra = {"score_thresh": 0.01} if arch.startswith("ssd") else {"box_score_thresh": 0.01}
    return getattr(detection, arch)(weights=None, weights_backbone=None, num_classes=91, **extra, **sizes)


class TorchvisionPersonDetector:
    def __init__(
        self,
        weights_path: str | os.PathLike,
        arch: str = DEFAULT_ARCH,
        device: str = "cpu",
        min_size: int | None = None,
        max_size: int | None = None,
    ) -> None:
        self.arch, self.device = arch, torch.device(device)
        model = build_architecture(arch, min_size, max_size)
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
        except Exception as exc:  # torch.load/load_state_dict fail in many types: one line for the operator
            raise DetectorError(
                f"detector weights {weights_path}: cannot load as {arch} ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0][:300]})"
            ) from None
        self.model = model.eval().to(self.device)

    @property
    def sizes(self) -> tuple[int, int]:
        """The (min_size, max_size) this model resizes frames to, as its transform really holds them."""
        transform: Any = self.model.transform  # torchvision's GeneralizedRCNNTransform (untyped)
        return int(min(transform.min_size)), int(transform.max_size)

    @torch.inference_mode()
    def detect(self, rgb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        image = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device).permute(2, 0, 1).float() / 255.0
        out = self.model([image])[0]
        keep = (out["labels"] == COCO_PERSON) & (out["scores"] >= threshold)
        # .double() before numpy: under autocast (bench/gpu.sh) the outputs may be bf16, which numpy lacks
        return out["boxes"][keep].double().cpu().numpy(), out["scores"][keep].double().cpu().numpy()


def write_demo_weights(path: str | os.PathLike, arch: str = DEFAULT_ARCH, seed: int = 0) -> None:
    """Random-init weights of the real architecture, for the demo and tests (finds nobody reliably)."""
    torch.manual_seed(seed)
    torch.save(build_architecture(arch).state_dict(), path)
