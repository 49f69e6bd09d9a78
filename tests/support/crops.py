"""Generated person crops for the fast filter's tests: a stick figure with a harness, an anchor above,
and a rope. ``correct`` (y = 1): the rope runs from the anchor to the harness. ``wrong`` (y = 0): no
rope, or a rope from the anchor that ends short of the figure. Random pose, colours, grey background,
clutter strokes, blur and noise make the class visible but not trivial."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ropewatch_validator.learn.data import write_manifest

W, H = 40, 64


def _colour(rng: np.random.Generator, lo: int = 0, hi: int = 256) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(lo, hi, 3))


def crop(y: int, rng: np.random.Generator) -> np.ndarray:
    """One (H, W, 3) uint8 crop of class ``y``."""
    grey = int(rng.integers(70, 190))
    im = Image.new("RGB", (W, H), (grey, grey, grey))
    d = ImageDraw.Draw(im)
    for _ in range(int(rng.integers(2, 6))):  # clutter: short strokes and boxes
        x0, y0 = int(rng.integers(0, W)), int(rng.integers(0, H))
        dx, dy = int(rng.integers(-8, 9)), int(rng.integers(-8, 9))
        if rng.random() < 0.5:
            d.line([x0, y0, x0 + dx, y0 + dy], fill=_colour(rng), width=1)
        else:
            d.rectangle([x0, y0, x0 + abs(dx) + 1, y0 + abs(dy) + 1], outline=_colour(rng))
    ax, ay = int(rng.integers(6, W - 6)), int(rng.integers(2, 7))
    d.rectangle([ax - 3, ay - 2, ax + 3, ay + 2], fill=(30, 30, 30))  # the anchor
    fx, fy = int(rng.integers(12, W - 12)), int(rng.integers(20, 28))  # head centre
    body = _colour(rng, 0, 120)
    d.ellipse([fx - 4, fy - 4, fx + 4, fy + 4], fill=body)
    hip = fy + 20
    d.line([fx, fy + 4, fx, hip], fill=body, width=3)
    for side in (-1, 1):
        d.line(
            [fx, fy + 9, fx + side * int(rng.integers(6, 11)), fy + int(rng.integers(12, 20))],
            fill=body,
            width=2,
        )
        d.line([fx, hip, fx + side * int(rng.integers(4, 9)), min(H - 1, hip + 14)], fill=body, width=2)
    hx, hy = fx, fy + 12
    d.rectangle([hx - 3, hy - 2, hx + 3, hy + 2], fill=(230, 200, 30))  # the harness
    rope = _colour(rng, 150, 256)
    if y == 1:
        d.line([ax, ay, hx, hy], fill=rope, width=2)
    elif rng.random() < 0.6:  # a dangling rope: ends at least 9 px away from the harness
        t = rng.uniform(0.2, 0.55)
        ex, ey = ax + t * (hx - ax) + rng.uniform(-6, 6), ay + t * (hy - ay)
        d.line([ax, ay, int(ex), int(ey)], fill=rope, width=2)
    im = im.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.0, 0.8))))
    arr = np.asarray(im).astype(np.float64) + rng.normal(0, 8, (H, W, 3))
    return arr.clip(0, 255).astype(np.uint8)


def write_dataset(data_dir: Path, n_train: int, n_val: int, seed: int = 0) -> dict[str, list[dict]]:
    """Balanced crops as PNG files plus train/val manifests; train and val use separate 'tasks'."""
    rng = np.random.default_rng(seed)
    out: dict[str, list[dict]] = {}
    for split, n, task in (("train", n_train, 1), ("val", n_val, 2)):
        rows = []
        (data_dir / "crops" / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            y = i % 2
            name = f"crops/{split}/{i:05d}.png"
            Image.fromarray(crop(y, rng)).save(data_dir / name)
            rows.append({"crop": name, "y": y, "task": task, "job": task, "frame": i, "shape_id": i})
        write_manifest(data_dir / f"{split}_manifest.csv", rows)
        out[split] = rows
    return out
