"""Benchmark of the function's pipeline on 1280x720 frames (not a test; prints figures).

    .venv/bin/python bench/bench_function.py [--frames 20] [--device cpu] [--detector-arch NAME]

Real sizes: DINOv3-S (vit_small_patch16_dinov3) at 1280x720 and torchvision's
fasterrcnn_mobilenet_v3_large_fpn, both random-init (speed does not depend on the weights). An
untrained detector finds an arbitrary number of persons, so the bench detector runs the real
detector on each frame and then hands the classifier exactly N persons: the detect stage is the
real cost, and classify is measured for N = 1 and N = 5 persons per frame.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ropewatch_core.model.checkpoint import demo_checkpoint, save_checkpoint
from ropewatch_core.model.detector import DEFAULT_ARCH, TorchvisionPersonDetector, write_demo_weights
from ropewatch_core.model.pipeline import Predictor

STAGES = ("decode", "detect", "classify", "total")


class FixedCountDetector:
    """The real detector's work, then N person boxes spread over the frame."""

    def __init__(self, detector: TorchvisionPersonDetector, persons: int) -> None:
        self.detector, self.persons = detector, persons

    def detect(self, rgb: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        self.detector.detect(rgb, threshold)
        h, w = rgb.shape[:2]
        xs = np.linspace(0.05, 0.8, self.persons) * w
        boxes = np.stack([xs, np.full_like(xs, 0.3 * h), xs + 0.08 * w, np.full_like(xs, 0.85 * h)], axis=1)
        return boxes, np.full(self.persons, 0.9)


def frames(n: int, width: int = 1280, height: int = 720) -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        base = np.linspace(60, 200, width, dtype=np.float64)[None, :, None] + rng.normal(
            0, 25, (height, width, 3)
        )
        buffer = io.BytesIO()
        Image.fromarray(base.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--detector-arch", default=DEFAULT_ARCH)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_path, det_path = Path(tmp) / "rope.pt", Path(tmp) / "person.pth"
        save_checkpoint(demo_checkpoint(), model_path)
        write_demo_weights(det_path, args.detector_arch)
        detector = TorchvisionPersonDetector(det_path, args.detector_arch, args.device)
        data = frames(args.frames)
        print(
            f"# torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
            f"{args.frames} frames 1280x720 JPEG (+1 warm-up), "
            f"classifier vit_small_patch16_dinov3 @1280x720, "
            f"detector {args.detector_arch}"
        )
        print(f"{'persons':>7} {'stage':>9} {'median ms':>10} {'p95 ms':>9}")
        for persons in (1, 5):
            predictor = Predictor(str(model_path), FixedCountDetector(detector, persons), device=args.device)
            predictor.run(data[0])  # warm-up: allocator, oneDNN kernels
            rows = []
            start = time.perf_counter()
            for frame in data:
                result = predictor.run(frame)
                assert len(result.detections) == persons
                rows.append([result.timings_ms[s] for s in STAGES])
            wall = time.perf_counter() - start
            table = np.array(rows)
            for i, stage in enumerate(STAGES):
                median, p95 = np.median(table[:, i]), np.percentile(table[:, i], 95)
                print(f"{persons:>7} {stage:>9} {median:>10.1f} {p95:>9.1f}")
            print(f"{persons:>7} {'frames/s':>9} {len(data) / wall:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
