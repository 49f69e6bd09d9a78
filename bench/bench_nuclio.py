"""Throughput of the function under Nuclio's real wrapper (../shared/nuclio/processor.py), by TORCH_THREADS.

    .venv/bin/python bench/bench_nuclio.py [--workers 2] [--requests 24] [--img-size 1280 720] [--rounds 2]

Starts the processor stand-in with ``--workers`` wrapper processes on a demo checkpoint (DINOv3-S at
``--img-size``, random-init: speed does not depend on the weights), sends ``--requests`` concurrent
requests (one per worker in flight, one 1280x720 JPEG with 3 given boxes, so the classifier is the whole
cost), after one warm-up request per worker, and prints requests/s for each setting of TORCH_THREADS:
torch's own default (every core in every worker) and the function's default (cores / NUM_WORKERS).
Under the protocol (bench/_protocol.py) the two settings take turns, ``--rounds`` times (A B A B), a
fresh function each time; the median requests/s of each and their ratio are the figures.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _protocol import add_arguments, finish, interleaved, ratio_line, start
from PIL import Image

from ropewatch_core.model.checkpoint import demo_checkpoint, save_checkpoint
from ropewatch_core.model.classifier import ModelConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the suite's processor runner
from support.nuclio import NuclioFunction


def jpeg_b64(width: int = 1280, height: int = 720) -> str:
    rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=90)
    return base64.b64encode(buffer.getvalue()).decode()


def run(model: Path, workers: int, n: int, env: dict[str, str]) -> tuple[float, set[int], set]:
    """requests/s, the status codes and the torch_threads each worker reported."""
    fn = NuclioFunction(  # a queued request waits for a worker instead of getting 503 after 10 s
        {"MODEL_PATH": str(model), **env}, workers, ("--worker-availability-timeout-ms", "600000")
    ).wait_ready(600)
    body = {
        "image": jpeg_b64(),
        "boxes": [[100, 200, 180, 500], [600, 150, 700, 600], [1000, 300, 1090, 700]],
    }
    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda _: fn.post(body, timeout=600).status_code, range(workers)))  # warm-up
            started = time.perf_counter()
            codes = set(pool.map(lambda _: fn.post(body, timeout=600).status_code, range(n)))
            elapsed = time.perf_counter() - started
    finally:
        fn.stop()
    reported = {
        rec.split('"torch_threads":')[1].split("}")[0].split(",")[0]
        for rec in fn.log_lines()
        if '"event":"model_loaded"' in rec
    }
    return n / elapsed, codes, reported


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--img-size", type=int, nargs=2, default=(1280, 720), metavar=("W", "H"))
    parser.add_argument("--rounds", type=int, default=2, help="turns of each setting (A B A B ...)")
    add_arguments(parser)
    args = parser.parse_args()
    session = start("bench_nuclio", args, torch_device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "rope.pt"
        save_checkpoint(demo_checkpoint(ModelConfig(img_size=tuple(args.img_size))), model)
        print(
            f"workers={args.workers} requests={args.requests} img_size={args.img_size[0]}x{args.img_size[1]}"
        )
        settings = {  # torch's default is one thread per core in every worker process
            f"TORCH_THREADS={os.cpu_count()} (torch's default)": {"TORCH_THREADS": str(os.cpu_count())},
            f"NUM_WORKERS={args.workers} (cores / workers)": {"NUM_WORKERS": str(args.workers)},
        }
        runs = {
            label: (lambda _, env=env: run(model, args.workers, args.requests, env))
            for label, env in settings.items()
        }
        results = interleaved(runs, range(args.rounds))
        rates = {}
        for label, turns in results.items():
            rates[label] = float(np.median([rate for rate, _, _ in turns]))
            codes = sorted(set().union(*(c for _, c, _ in turns)))
            reported = sorted(set().union(*(r for _, _, r in turns)))
            each = ", ".join(f"{rate:.3f}" for rate, _, _ in turns)
            print(
                f"{label:42} {rates[label]:6.3f} req/s (median of {each})  statuses {codes}  "
                f"torch_threads {reported}"
            )
        print(ratio_line("requests/s", rates))
    finish(session)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
