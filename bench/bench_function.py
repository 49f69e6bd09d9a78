"""Benchmark of the function's pipeline per frame (decode, detect, classify), A/B interleaved.

    .venv/bin/python bench/bench_function.py [--frames 20] [--device cpu] [--persons 1,5]
        [--detector-arch A[,B...]] [--detector-min-size default,480] [--detector-max-size default,853]
        [--autocast fp32[,bf16,fp16]] [--frame-size 1280x720] [--expert-depth N]

Real sizes: DINOv3-S (vit_small_patch16_dinov3) at the frame size (1280x720) and torchvision
detectors, all random-init (speed does not depend on the weights). An untrained detector finds an
arbitrary number of persons, so the bench detector runs the real detector on each frame and then hands
the classifier exactly N persons: the detect stage is the real cost, and classify is measured for
N = 1 and N = 5 persons per frame.

Configurations: every detector architecture x size (``default`` = the architecture's own, 800/1333 for
the default detector; a size pair is min,max as DETECTOR_MIN_SIZE/DETECTOR_MAX_SIZE; the fixed-size SSD
runs once) x every autocast dtype. Each frame goes through every configuration in turn (A B A B ...);
per configuration: p50/p95 of each stage, frames/s (frames over the sum of request times), the ratio of
frames/s to the first configuration, and its decisions against the first configuration's on the same
persons (logit deltas, persons on the other side of thr).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
from _protocol import (
    add_arguments,
    exactness,
    exactness_line,
    finish,
    interleaved,
    p50_p95,
    ratio_line,
    start,
)
from PIL import Image

from ropewatch_core.model.checkpoint import demo_checkpoint, save_checkpoint
from ropewatch_core.model.classifier import ModelConfig
from ropewatch_core.model.detector import (
    DEFAULT_ARCH,
    FIXED_SIZE,
    TorchvisionPersonDetector,
    write_demo_weights,
)
from ropewatch_core.model.pipeline import Predictor, Result

STAGES = ("decode", "detect", "classify", "total")
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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


def frame_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}")
    return int(width), int(height)


def expert_checkpoint(size: tuple[int, int], depth: int | None) -> dict:
    """The demo expert (DINOv3-S) at ``size``; ``depth`` fewer blocks for the smoke test only."""
    return demo_checkpoint(ModelConfig(img_size=size, backbone_kwargs={"depth": depth} if depth else {}))


@dataclass(frozen=True)
class Config:
    name: str
    arch: str
    min_size: int | None
    max_size: int | None
    dtype: str


def size_list(text: str) -> list[int | None]:
    """``default,480``: pixels, or ``default`` for the architecture's own size."""
    out: list[int | None] = []
    for item in text.split(","):
        if item != "default" and not item.isdigit():
            raise argparse.ArgumentTypeError(f"expected pixels or 'default', got {item!r}")
        out.append(None if item == "default" else int(item))
    return out


def dtype_list(text: str) -> list[str]:
    names = text.split(",")
    if unknown := sorted(set(names) - set(DTYPES)):
        raise argparse.ArgumentTypeError(f"unknown {unknown}; one of {', '.join(DTYPES)}")
    return names


def configs(
    archs: list[str], mins: list[int | None], maxs: list[int | None], dtypes: list[str]
) -> list[Config]:
    """Architecture x size x dtype; the fixed-size SSD once per dtype."""
    sizes = list(zip(mins, maxs))
    out = []
    for arch in archs:
        for low, high in [(None, None)] if arch in FIXED_SIZE else sizes:
            for dtype in dtypes:
                size = "" if low is None and high is None else f"@{low or 'default'}/{high or 'default'}"
                out.append(Config(f"{arch}{size} {dtype}", arch, low, high, dtype))
    return out


def sizes(detector: TorchvisionPersonDetector) -> str:
    return "/".join(map(str, detector.sizes))


def timed_run(predictor: Predictor, frame: bytes, *, persons: int, device: str, dtype: str) -> Result:
    autocast = (
        torch.autocast(device.split(":")[0], dtype=DTYPES[dtype])
        if DTYPES[dtype]
        else contextlib.nullcontext()
    )
    with autocast:
        result = predictor.run(frame)
    assert len(result.detections) == persons
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--persons", default="1,5", help="persons per frame, one run each")
    parser.add_argument("--detector-arch", default=DEFAULT_ARCH, help="one or more, comma-separated")
    parser.add_argument(
        "--detector-min-size", type=size_list, default=[None], help="comma-separated, paired with max"
    )
    parser.add_argument(
        "--detector-max-size", type=size_list, default=[None], help="comma-separated, paired with min"
    )
    parser.add_argument(
        "--autocast", type=dtype_list, default=["fp32"], help=f"one or more of {', '.join(DTYPES)}"
    )
    parser.add_argument("--frame-size", type=frame_size, default=(1280, 720), help="frames and expert input")
    parser.add_argument("--expert-depth", type=int, help="fewer ViT blocks (smoke test only; default all 12)")
    add_arguments(parser)
    args = parser.parse_args()
    if len(args.detector_min_size) != len(args.detector_max_size):
        parser.error("--detector-min-size and --detector-max-size need as many values each")
    plan = configs(
        args.detector_arch.split(","), args.detector_min_size, args.detector_max_size, args.autocast
    )
    session = start("bench_function", args, torch_device=args.device)
    width, height = args.frame_size
    with tempfile.TemporaryDirectory() as tmp:
        model_path = Path(tmp) / "rope.pt"
        save_checkpoint(expert_checkpoint(args.frame_size, args.expert_depth), model_path)
        detectors = {}
        for c in plan:
            weights = Path(tmp) / f"{c.arch}.pth"
            if not weights.exists():
                write_demo_weights(weights, c.arch)
            detectors[c.name] = TorchvisionPersonDetector(
                weights, c.arch, args.device, c.min_size, c.max_size
            )
        data = frames(args.frames, width, height)
        print(
            f"# {args.frames} frames {width}x{height} JPEG (+1 warm-up per configuration), classifier "
            f"vit_small_patch16_dinov3 @{width}x{height}"
            f"{f' depth {args.expert_depth}' if args.expert_depth else ''}; configurations interleaved per "
            f"frame: {'; '.join(f'{c.name} (sizes {sizes(detectors[c.name])})' for c in plan)}"
        )
        print(f"{'persons':>7} {'configuration':>52} {'stage':>9} {'p50 ms':>9} {'p95 ms':>9}")
        for persons in (int(p) for p in args.persons.split(",")):
            predictors = {
                c.name: Predictor(
                    str(model_path), FixedCountDetector(detectors[c.name], persons), device=args.device
                )
                for c in plan
            }
            for c in plan:  # warm-up: allocator, oneDNN kernels
                timed_run(predictors[c.name], data[0], persons=persons, device=args.device, dtype=c.dtype)
            runs = {
                c.name: partial(
                    timed_run, predictors[c.name], persons=persons, device=args.device, dtype=c.dtype
                )
                for c in plan
            }
            results = interleaved(runs, data)
            fps = {}
            for c in plan:
                table = np.array([[r.timings_ms.get(s, 0.0) for s in STAGES] for r in results[c.name]])
                for i, stage in enumerate(STAGES):
                    p50, p95 = p50_p95(table[:, i])
                    print(f"{persons:>7} {c.name:>52} {stage:>9} {p50:>9.1f} {p95:>9.1f}")
                fps[c.name] = len(data) / (table[:, 3].sum() / 1000)
                print(f"{persons:>7} {c.name:>52} {'frames/s':>9} {fps[c.name]:>9.3f}")
            if len(plan) > 1:
                print(ratio_line(f"frames/s, {persons} person(s)", fps))
                ref = plan[0].name
                ref_z = [d.logit for r in results[ref] for d in r.detections]
                ref_side = [d.value == "correct" for r in results[ref] for d in r.detections]
                for c in plan[1:]:
                    z = [d.logit for r in results[c.name] for d in r.detections]
                    side = [d.value == "correct" for r in results[c.name] for d in r.detections]
                    print(exactness_line(c.name, ref, exactness(ref_z, z, ref_side, side)))
            sys.stdout.flush()
    finish(session)
    return 0


if __name__ == "__main__":
    sys.exit(main())
