"""The rope classifier: timm ViT patch features → RoIAlign per (expanded) person box → MLP head.

All persons of one frame share one backbone pass; the head sees a fixed-size RoI grid per person.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

DEFAULT_BACKBONE = "vit_small_patch16_dinov3"


@dataclass(frozen=True)
class ModelConfig:
    """Architecture settings stored in a checkpoint's ``config``; ``img_size`` is [width, height]."""

    backbone_name: str = DEFAULT_BACKBONE
    img_size: tuple[int, int] = (1280, 720)
    feat_ch: int = 384
    expand: dict = field(default_factory=lambda: {"x": 1.0, "y_top": 0.2, "y_bot": 1.5})
    head_width: int = 256
    roi_size: int = 7
    backbone_kwargs: dict = field(default_factory=dict)  # e.g. {"depth": 1} for tiny test models

    def to_dict(self) -> dict:
        out = asdict(self)
        out["img_size"] = list(self.img_size)
        return out


def expand_boxes(boxes: np.ndarray, expand: dict, width: int, height: int) -> np.ndarray:
    """Grow person boxes to take in the rope and anchor: ``x`` is the total widening as a fraction of
    the box width (half each side), ``y_top``/``y_bot`` the fraction of the box height added above/below;
    clipped to the frame."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    dx = float(expand.get("x", 0.0)) * w / 2
    out = np.stack(
        [
            b[:, 0] - dx,
            b[:, 1] - float(expand.get("y_top", 0.0)) * h,
            b[:, 2] + dx,
            b[:, 3] + float(expand.get("y_bot", 0.0)) * h,
        ],
        axis=1,
    )
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, height)
    return out


class RopeClassifier(nn.Module):
    backbone: Any  # a timm model: its attributes (patch_embed, num_prefix_tokens, ...) vary by architecture
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, config: ModelConfig, n_labels: int) -> None:
        import timm

        super().__init__()
        self.config = config
        width, height = config.img_size
        self.backbone = timm.create_model(
            config.backbone_name,
            pretrained=False,
            num_classes=0,
            img_size=(height, width),
            dynamic_img_size=True,
            **config.backbone_kwargs,
        )
        mean = self.backbone.pretrained_cfg.get("mean", (0.485, 0.456, 0.406))
        std = self.backbone.pretrained_cfg.get("std", (0.229, 0.224, 0.225))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(config.feat_ch * config.roi_size**2, config.head_width),
            nn.GELU(),
            nn.Linear(config.head_width, n_labels),
        )

    @property
    def patch_size(self) -> int:
        return int(self.backbone.patch_embed.patch_size[0])

    def feature_map(self, image: torch.Tensor) -> torch.Tensor:
        """(1, 3, H, W) float in [0, 1] → (1, C, H/p, W/p) patch features."""
        tokens = self.backbone.forward_features((image - self.mean) / self.std)
        tokens = tokens[:, self.backbone.num_prefix_tokens :]
        h, w = image.shape[2] // self.patch_size, image.shape[3] // self.patch_size
        return tokens.reshape(tokens.shape[0], h, w, tokens.shape[2]).permute(0, 3, 1, 2)

    def forward(self, image: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Logits (N, n_labels) for N boxes (x1, y1, x2, y2 in ``image`` pixels) of one frame."""
        from torchvision.ops import roi_align

        feats = self.feature_map(image)
        rois = torch.cat([boxes.new_zeros((boxes.shape[0], 1)), boxes], dim=1)
        pooled = roi_align(
            feats,
            rois,
            output_size=self.config.roi_size,
            spatial_scale=1.0 / self.patch_size,
            sampling_ratio=2,
            aligned=True,
        )
        return self.head(pooled)


def prepare(
    rgb: np.ndarray, boxes: np.ndarray, config: ModelConfig, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize the frame to the model's size (multiple of the patch) and map the boxes with it."""
    from torch.nn import functional as F

    width, height = config.img_size
    src_h, src_w = rgb.shape[:2]
    image = torch.from_numpy(np.ascontiguousarray(rgb)).to(device).permute(2, 0, 1)[None].float()
    image.div_(255.0)  # in place: a 50 MP frame is 600 MB as float32
    if (src_w, src_h) != (width, height):
        image = F.interpolate(
            image, size=(height, width), mode="bilinear", align_corners=False, antialias=True
        )
    scale = np.array([width / src_w, height / src_h, width / src_w, height / src_h])
    expanded = expand_boxes(boxes, config.expand, src_w, src_h) * scale
    return image, torch.as_tensor(expanded, dtype=torch.float32, device=device)
