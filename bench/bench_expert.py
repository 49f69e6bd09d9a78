"""Benchmark of the expert pass (DINOv3-S backbone + RoIAlign + head, one frame at a time) under
execution options, A/B interleaved, each checked for identical decisions against the first.

    .venv/bin/python bench/bench_expert.py [--frames 100] [--persons 5] [--device cpu]
        [--variants eager,compile,channels-last,sdpa-math,sdpa-flash,no-fused-attn] [--frame-size 1280x720]

A variant is options joined by ``+`` (``compile+channels-last``); ``eager`` (or ``fp32``) is none:
- ``compile``: ``torch.compile`` (inductor) of the backbone's feature map; RoIAlign and the head stay eager
  (their shape follows the number of persons);
- ``channels-last``: model and frame tensor in channels-last memory format;
- ``sdpa-math`` / ``sdpa-flash`` / ``sdpa-efficient``: torch's scaled-dot-product attention held to one
  backend (``torch.nn.attention.sdpa_kernel``); the default lets torch choose;
- ``no-fused-attn``: timm's own attention (matmul + softmax) instead of SDPA;
- ``bf16`` / ``fp16``: autocast to that dtype (bench/gpu.sh compares them on CUDA).

The expert is the demo checkpoint (random-init: speed does not depend on the weights) at the frame size;
frames are random pixels, each with ``--persons`` boxes of varied size and place (seeded). Every frame
goes through every variant in turn (A B A B ...), after ``--warmup`` passes of each. Per variant:
p50/p95 ms per frame, frames/s, the ratio to the first variant, and the exactness check against the
first variant on all persons: max |logit delta| and how many persons fall on the other side of thr,
with thr put at the first variant's median logit, so half the persons sit on each side (the strictest
place for the check; an untrained model's own thr may have every person on one side). The verdict
keeps a variant only if it is at least 1.2x faster and identical: >= 500 persons, logits within 1e-4,
nobody on the other side of thr.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _protocol import Exactness, add_arguments, exactness, exactness_line, finish, interleaved, p50_p95, start
from bench_function import expert_checkpoint, frame_size

from ropewatch_core.decision import decide
from ropewatch_core.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from ropewatch_core.model.classifier import RopeClassifier, prepare

OPTIONS = (
    "compile",
    "channels-last",
    "sdpa-math",
    "sdpa-flash",
    "sdpa-efficient",
    "no-fused-attn",
    "bf16",
    "fp16",
)
MIN_SPEEDUP, TOLERANCE, MIN_PERSONS = 1.2, 1e-4, 500


@dataclass(frozen=True)
class Variant:
    name: str
    options: frozenset[str]


def parse_variants(text: str) -> list[Variant]:
    out = []
    for name in text.split(","):
        options = frozenset(o for o in name.split("+") if o not in ("eager", "fp32"))
        if unknown := options - set(OPTIONS):
            raise SystemExit(
                f"--variants: unknown option(s) {sorted(unknown)} in {name!r}; one of {', '.join(OPTIONS)}"
            )
        if {"bf16", "fp16"} <= options:
            raise SystemExit(f"--variants: {name!r} asks for two autocast dtypes")
        out.append(Variant(name, options))
    return out


def sdpa_context(options: frozenset[str]) -> contextlib.AbstractContextManager:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backends = {
        "sdpa-math": SDPBackend.MATH,
        "sdpa-flash": SDPBackend.FLASH_ATTENTION,
        "sdpa-efficient": SDPBackend.EFFICIENT_ATTENTION,
    }
    chosen = [backends[o] for o in options if o in backends]
    return sdpa_kernel(chosen) if chosen else contextlib.nullcontext()


def autocast_context(options: frozenset[str], device: str) -> contextlib.AbstractContextManager:
    for name, dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16)):
        if name in options:
            return torch.autocast(device.split(":")[0], dtype=dtype)
    return contextlib.nullcontext()


def build(ckpt: Checkpoint, variant: Variant) -> RopeClassifier:
    """Its own copy of the expert with the variant's model-side options applied."""
    model = copy.deepcopy(ckpt.model).eval()
    if "no-fused-attn" in variant.options:
        for module in model.modules():
            if hasattr(module, "fused_attn"):
                module.fused_attn = False
    if "channels-last" in variant.options:
        model = model.to(memory_format=torch.channels_last)
    if "compile" in variant.options:
        model.feature_map = torch.compile(model.feature_map, backend="inductor")  # type: ignore[method-assign]
    return model


def runner(
    ckpt: Checkpoint, variant: Variant, device: str
) -> Callable[[tuple[np.ndarray, np.ndarray]], tuple[float, np.ndarray]]:
    model = build(ckpt, variant)
    cuda = device.startswith("cuda")

    @torch.inference_mode()
    def run(item: tuple[np.ndarray, np.ndarray]) -> tuple[float, np.ndarray]:
        """ms for one frame (frame to logits, as Predictor.classify does) and its persons' logits."""
        rgb, boxes = item
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        image, rois = prepare(rgb, boxes, ckpt.config, torch.device(device))
        if "channels-last" in variant.options:
            image = image.contiguous(memory_format=torch.channels_last)
        with sdpa_context(variant.options), autocast_context(variant.options, device):
            logits = model(image, rois).float().cpu().numpy()
        ms = (time.perf_counter() - t0) * 1000
        return ms, logits

    return run


def inputs(n: int, persons: int, width: int, height: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        rgb = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        w = rng.uniform(0.04, 0.15, persons) * width
        h = w * rng.uniform(1.5, 3.0, persons)
        x1, y1 = rng.uniform(0, width - w), rng.uniform(0, np.maximum(height - h, 1))
        out.append((rgb, np.stack([x1, y1, x1 + w, np.minimum(y1 + h, height)], axis=1)))
    return out


def verdict(speedup: float, e: Exactness) -> str:
    reasons = []
    if speedup < MIN_SPEEDUP:
        reasons.append(f"{speedup:.2f}x < {MIN_SPEEDUP}x")
    if e.persons < MIN_PERSONS:
        reasons.append(f"{e.persons} persons < {MIN_PERSONS} (no verdict on identity)")
    if e.max_abs_delta > TOLERANCE:
        reasons.append(f"logit delta {e.max_abs_delta:.3g} > {TOLERANCE:g}")
    if e.flips:
        reasons.append(f"{e.flips} decision(s) changed")
    return "KEEP" if not reasons else "DROP (" + "; ".join(reasons) + ")"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--persons", type=int, default=5, help="persons per frame")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--variants", default="eager,compile,channels-last,sdpa-math,sdpa-flash,no-fused-attn"
    )
    parser.add_argument("--warmup", type=int, default=3, help="passes of each variant before timing")
    parser.add_argument("--frame-size", type=frame_size, default=(1280, 720), help="frames and expert input")
    parser.add_argument("--expert-depth", type=int, help="fewer ViT blocks (smoke test only; default all 12)")
    add_arguments(parser)
    args = parser.parse_args()
    variants = parse_variants(args.variants)
    session = start("bench_expert", args, torch_device=args.device)
    width, height = args.frame_size
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rope.pt"
        save_checkpoint(expert_checkpoint(args.frame_size, args.expert_depth), path)
        ckpt = load_checkpoint(path, args.device)
    data = inputs(args.frames, args.persons, width, height)
    print(
        f"# expert vit_small_patch16_dinov3 @{width}x{height}"
        f"{f' depth {args.expert_depth}' if args.expert_depth else ''}, batch 1 (one frame per pass), "
        f"{args.frames} frames x {args.persons} persons, {args.warmup} warm-up passes per variant, "
        f"variants interleaved per frame: {', '.join(v.name for v in variants)}"
    )
    runs = {}
    for v in variants:
        run = runner(ckpt, v, args.device)
        t0 = time.perf_counter()
        try:  # the first pass tells whether this device has the variant's kernels at all
            for i in range(max(1, args.warmup)):
                run(data[i % len(data)])
        except RuntimeError as exc:  # e.g. "No viable backend for scaled_dot_product_attention"
            if not runs:
                raise SystemExit(
                    f"bench_expert: the reference {v.name} does not run: {' '.join(str(exc).split())[:300]}"
                ) from None
            print(f"# skipped {v.name}: not available on {args.device}: {' '.join(str(exc).split())[:200]}")
            continue
        print(f"# warm-up {v.name}: {time.perf_counter() - t0:.1f} s (includes compiling)", flush=True)
        runs[v.name] = run
    variants = [v for v in variants if v.name in runs]
    results = interleaved(runs, data)
    ref = variants[0].name
    ref_z, _, _ = decide(
        np.concatenate([z for _, z in results[ref]]), ckpt.labels, ckpt.thr, ckpt.temperature
    )
    thr_z = float(np.median(ref_z))
    print(f"# thr for the exactness check: the median logit of {ref}, {thr_z:.6g}")
    print(f"{'variant':>28} {'p50 ms':>9} {'p95 ms':>9} {'frames/s':>9} {'x':>6}  verdict")
    fps = {}
    for v in variants:
        ms = [t for t, _ in results[v.name]]
        fps[v.name] = len(ms) / (sum(ms) / 1000)
    for v in variants:
        ms = [t for t, _ in results[v.name]]
        z, _, _ = decide(
            np.concatenate([z for _, z in results[v.name]]), ckpt.labels, ckpt.thr, ckpt.temperature
        )
        e = exactness(ref_z, z, ref_z >= thr_z, z >= thr_z)
        speedup = fps[v.name] / fps[ref]
        p50, p95 = p50_p95(ms)
        shown = "reference" if v.name == ref else verdict(speedup, e)
        print(f"{v.name:>28} {p50:>9.1f} {p95:>9.1f} {fps[v.name]:>9.3f} {speedup:>6.2f}  {shown}")
        if v.name != ref:
            print(exactness_line(v.name, ref, e))
    sys.stdout.flush()
    finish(session)
    return 0


if __name__ == "__main__":
    sys.exit(main())
