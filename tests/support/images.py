"""Frames the tests make: random noise, so no two are alike and nothing is downloaded."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def noise_png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(
        out, "PNG"
    )
    return out.getvalue()
