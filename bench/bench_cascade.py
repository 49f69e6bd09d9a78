"""Benchmark of the fast-filter cascade against the expert alone, 1280x720 frames (prints figures).

    .venv/bin/python bench/bench_cascade.py [--frames 8] [--shares 0.5,0.8,0.95] [--detector-arch NAME]
        [--detector-min-size N --detector-max-size N] [--filter-model NAME] [--filter-size PX]

Real sizes, random-init weights (speed does not depend on them): the expert is DINOv3-S at 1280x720
(demo checkpoint), the filter mobilenetv4_hybrid_medium at 256 px, the detector a torchvision
architecture (at its own input size, or the given DETECTOR_MIN_SIZE/DETECTOR_MAX_SIZE) run on every
frame (bench_function.FixedCountDetector then hands over exactly N persons).
An untrained filter has no meaningful P, so the bench runs the real filter and then sets the P of
exactly SHARE of the persons (evenly spread over the run) to 0.99 (decided), the others' to 0.5
(deferred, band [0.1, 0.9]): the filter's cost is real and the filter-decided share is what the row says.
Under the protocol (bench/_protocol.py) every frame goes through every configuration in turn (expert
only, then each cascade share: A B C A B C ...). Per configuration: per-frame p50/p95 of the whole
request (decode, detect, filter, expert), frames/s and CPU seconds per frame, with their ratios to the
expert alone, and the per-stage split (median ms of detect, filter, classify); then the filter's own
cost per person. The detectors' cost per architecture and size is bench_function's
(``--detector-arch A,B --detector-min-size ...``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from _protocol import add_arguments, finish, interleaved, start
from bench_function import FixedCountDetector, expert_checkpoint, frame_size, frames, sizes

from ropewatch_core.model.checkpoint import save_checkpoint
from ropewatch_core.model.detector import DEFAULT_ARCH, TorchvisionPersonDetector, write_demo_weights
from ropewatch_core.model.fast_filter import FastFilter, build_model, load_filter, new_checkpoint
from ropewatch_core.model.pipeline import Predictor, Result


class ForcedShare:
    """The real filter's work, then P = 0.99 (decided) for exactly SHARE of the persons seen so far,
    else 0.5 (deferred): person k is decided iff floor((k + 1) * SHARE) > floor(k * SHARE)."""

    def __init__(self, filt: FastFilter, share: float) -> None:
        self.filt, self.share, self.seen = filt, share, 0
        self.band, self.version, self.sha256, self.temperature = (0.1, 0.9), "bench", "x", 1.0

    def p_correct(self, rgb: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        z, _ = self.filt.p_correct(rgb, boxes)
        k = self.seen + np.arange(len(boxes))
        self.seen += len(boxes)
        decided = np.floor((k + 1) * self.share + 1e-9) > np.floor(k * self.share + 1e-9)
        return z, np.where(decided, 0.99, 0.5)


class Fixed:
    def __init__(self, value: ForcedShare) -> None:
        self.value = value

    def current(self) -> ForcedShare:
        return self.value


def timed(predictor: Predictor, frame: bytes, *, persons: int) -> tuple[Result, float]:
    """One request and the CPU seconds it took: on a shared machine the CPU time is the figure other
    processes disturb least, so the speed-up is given on both."""
    cpu = time.process_time()
    result = predictor.run(frame)
    assert len(result.detections) == persons
    return result, time.process_time() - cpu


def summary(runs: list[tuple[Result, float]], persons: int) -> dict:
    totals = [r.timings_ms["total"] for r, _ in runs]
    stages = {s: float(np.median([r.timings_ms.get(s, 0.0) for r, _ in runs])) for s in STAGES}
    return {
        "p50": float(np.median(totals)),
        "p95": float(np.percentile(totals, 95)),
        "fps": len(runs) / (sum(totals) / 1000),
        "cpu_s": sum(c for _, c in runs) / len(runs),
        "expert_frames": sum(r.expert_calls for r, _ in runs) / len(runs),
        "filter_share": sum(d.stage == "filter" for r, _ in runs for d in r.detections)
        / (persons * len(runs)),
        **stages,
    }


STAGES = ("detect", "filter", "classify")


def row(persons: int, name: str, r: dict, base: dict) -> str:
    return (
        f"{persons:>7} {name:>14} {r['p50']:>9.0f} {r['p95']:>9.0f} {r['fps']:>9.3f} "
        f"{r['fps'] / base['fps']:>8.2f} {r['cpu_s']:>8.2f} {base['cpu_s'] / r['cpu_s']:>8.2f} "
        f"{r['expert_frames']:>8.2f} {r['filter_share']:>8.0%} " + " ".join(f"{r[s]:>8.0f}" for s in STAGES)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--detector-arch", default=DEFAULT_ARCH)
    parser.add_argument(
        "--detector-min-size", type=int, help="DETECTOR_MIN_SIZE (default: the architecture's)"
    )
    parser.add_argument(
        "--detector-max-size", type=int, help="DETECTOR_MAX_SIZE (default: the architecture's)"
    )
    parser.add_argument("--filter-model", default="mobilenetv4_hybrid_medium")
    parser.add_argument("--filter-size", type=int, default=256)
    parser.add_argument("--shares", default="0.5,0.8,0.95")
    parser.add_argument("--persons", default="1,5", help="persons per frame, one run each")
    parser.add_argument("--frame-size", type=frame_size, default=(1280, 720), help="frames and expert input")
    parser.add_argument("--expert-depth", type=int, help="fewer ViT blocks (smoke test only; default all 12)")
    add_arguments(parser)
    args = parser.parse_args()
    shares = [float(s) for s in args.shares.split(",")]
    session = start("bench_cascade", args, torch_device="cpu")
    width, height = args.frame_size
    data = frames(args.frames, width, height)
    with tempfile.TemporaryDirectory() as tmp:
        model_path, det_path, filter_path = (Path(tmp) / n for n in ("rope.pt", "person.pth", "filter.pt"))
        save_checkpoint(expert_checkpoint(args.frame_size, args.expert_depth), model_path)
        torch.manual_seed(0)
        save_checkpoint(
            new_checkpoint(build_model(args.filter_model), args.filter_model, args.filter_size), filter_path
        )
        filt = load_filter(filter_path)
        write_demo_weights(det_path, args.detector_arch)
        detector = TorchvisionPersonDetector(
            det_path, args.detector_arch, min_size=args.detector_min_size, max_size=args.detector_max_size
        )
        print(
            f"# {args.frames} frames {width}x{height} JPEG (+1 warm-up per configuration), configurations "
            f"interleaved per frame; expert vit_small_patch16_dinov3 @{width}x{height}"
            f"{f' depth {args.expert_depth}' if args.expert_depth else ''}; filter {args.filter_model} "
            f"@{args.filter_size}; detector {args.detector_arch} (sizes {sizes(detector)})"
        )
        print(
            f"{'persons':>7} {'config':>14} {'p50 ms':>9} {'p95 ms':>9} {'frames/s':>9} {'x wall':>8} "
            f"{'CPU s/fr':>8} {'x CPU':>8} {'expert/fr':>8} {'by filter':>8} "
            + " ".join(f"{s + ' ms':>8}" for s in STAGES),
            flush=True,
        )
        for persons in (int(p) for p in args.persons.split(",")):
            det = FixedCountDetector(detector, persons)
            predictors = {"expert only": Predictor(str(model_path), det)}
            for share in shares:
                predictor = Predictor(str(model_path), det)
                predictor._filter = Fixed(ForcedShare(filt, share))  # type: ignore[assignment]
                predictors[f"cascade {share:.0%}"] = predictor
            for predictor in predictors.values():  # warm-up
                timed(predictor, data[0], persons=persons)
            runs = interleaved({n: partial(timed, p, persons=persons) for n, p in predictors.items()}, data)
            base = summary(runs["expert only"], persons)
            for name, results in runs.items():
                print(row(persons, name, summary(results, persons), base), flush=True)
        rgb = np.zeros((height, width, 3), np.uint8)
        box = [0.23 * width, 0.28 * height, 0.31 * width, 0.69 * height]
        for n in (1, 5):
            boxes = np.tile([box], (n, 1))
            filt.p_correct(rgb, boxes)
            reps = [time.perf_counter()]
            for _ in range(10):
                filt.p_correct(rgb, boxes)
                reps.append(time.perf_counter())
            ms = np.median(np.diff(reps)) * 1000
            print(
                f"# filter cost, {n} person(s): {ms:.1f} ms per frame, "
                f"{ms / n:.1f} ms per person (crop + model)",
                flush=True,
            )
    finish(session)
    return 0


if __name__ == "__main__":
    sys.exit(main())
