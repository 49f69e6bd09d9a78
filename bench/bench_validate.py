"""Benchmark: split + match + metrics + JSON report on a generated job, beside faster-coco-eval and
pycocotools' COCOeval.

    .venv/bin/python bench/bench_validate.py [--frames 10000] [--persons 10] [--repeat 3]

The job (default 10,000 frames, ~100,000 manual + ~100,000 auto person boxes) is generated in
memory; fetching is not timed. faster-coco-eval (``COCOeval_faster``, C++) and COCOeval run on the
same boxes with one IoU threshold (0.5), one area range and maxDets high enough for every frame;
their AP@0.5 must agree (printed), and their time includes turning the boxes into COCO dicts. Under
the protocol (bench/_protocol.py): one warm-up run of each (lazy imports), then ``--repeat`` rounds
that run the three in turn (A B C A B C ...), median and best per library, then the peak Python memory
of one more run under tracemalloc; the ratios are the figures (ropewatch must stay at least 1.5x
faster than faster-coco-eval on 10,000 frames). A sweep over frame counts, best of ``--repeat`` runs
each, shows whether our time is linear in the number of frames.

The job goes through ``fetch.job_tables``, the public function that turns a job's API bodies into its
tables, exactly as validate-job does after its downloads.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import tracemalloc

import numpy as np
from _protocol import add_arguments, finish, interleaved, start

from ropewatch_validator.cvat import fetch
from ropewatch_validator.evaluation.match import Settings, match, select
from ropewatch_validator.render import report
from ropewatch_validator.render.model import Source
from ropewatch_validator.sandbox import synthetic


def shapes_of(n_frames: int, persons: float):
    job = synthetic.generate(
        n_frames, persons_per_frame=persons, p_extra=0.8, real_scores=True, extras=False, seed=7
    )
    data = fetch.job_tables("bench", int(job.job["id"]), job.job, job.labels, job.meta, job.annotations)
    return data.frames, data.shapes, data.skipped


def ours(frames, shapes, skipped) -> str:
    s = Settings()
    pred, ref = match(select(shapes, s, s.pred_sources), select(shapes, s, s.ref_sources), s.iou)
    rep = report.build(
        source=Source(
            host="bench",
            job=0,
            task=0,
            project=None,
            job_updated_date="",
            reference_mode="manual",
            reference_job=None,
        ),
        settings=s,
        frames=frames,
        pred=pred,
        ref=ref,
        skipped=skipped,
    )
    return report.to_json(rep)


def coco_inputs(frames, shapes) -> tuple[dict, list[dict], int]:
    """The job as COCO dicts: ground truth (manual/file/consensus), detections (auto/semi-auto), maxDets."""
    person = shapes[shapes["label"] == "person"]
    ref = person[person["source"].isin(("manual", "file", "consensus"))]
    pred = person[person["source"].isin(("auto", "semi-auto"))]

    def anns(df, with_score):
        xywh = np.stack([df.x1, df.y1, df.x2 - df.x1, df.y2 - df.y1], 1)
        out = []
        for i, (frame, box) in enumerate(zip(df["frame"].to_numpy(), xywh)):
            a = {
                "id": i + 1,
                "image_id": int(frame),
                "category_id": 1,
                "bbox": box.tolist(),
                "area": float(box[2] * box[3]),
                "iscrowd": 0,
            }
            if with_score:
                a["score"] = float(df["score"].iat[i])
            out.append(a)
        return out

    dataset = {
        "images": [{"id": int(f)} for f in frames["frame"]],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": anns(ref, False),
    }
    return dataset, anns(pred, True), int(person.groupby("frame").size().max()) + 1


def coco_eval(library: str, frames, shapes) -> float:
    """Convert the job to COCO dicts, index, evaluate and accumulate with one library's COCO API (the
    same steps for both libraries); returns AP@0.5 over all areas."""
    if library == "faster-coco-eval":
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    else:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval

    dataset, detections, max_dets = coco_inputs(frames, shapes)
    gt = COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes(detections)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.iouThrs = np.array([0.5])
        ev.params.areaRng, ev.params.areaRngLbl = [[0, 1e12]], ["all"]
        ev.params.maxDets = [max_dets]
        ev.evaluate()
        ev.accumulate()
    precision = np.asarray(ev.eval["precision"])[0, :, 0, 0, -1]
    return float(precision[precision > -1].mean())


def timed_once(fn, *args) -> float:
    t0 = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t0


def peak_mib(fn, *args) -> float:
    """Peak Python memory of one run under tracemalloc (which slows it: never timed)."""
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return peak


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--persons", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds (median and best are kept)")
    add_arguments(ap)
    args = ap.parse_args()
    session = start("bench_validate", args)
    frames, shapes, skipped = shapes_of(args.frames, args.persons)
    n_auto = int(shapes["source"].isin(("auto", "semi-auto")).sum())
    print(
        f"job: {args.frames} frames, {len(shapes)} boxes "
        f"({n_auto} auto/semi-auto, {len(shapes) - n_auto} manual)"
    )
    runs = {
        "ropewatch split+match+metrics+report.json": lambda: ours(frames, shapes, skipped),
        "faster-coco-eval to-COCO+index+evaluate+accumulate": lambda: coco_eval(
            "faster-coco-eval", frames, shapes
        ),
        "pycocotools COCOeval to-COCO+index+evaluate+accumulate": lambda: coco_eval(
            "pycocotools", frames, shapes
        ),
    }
    for run in runs.values():  # warm-up: each library's lazy imports
        run()
    times = interleaved(
        {name: (lambda _, r=run: timed_once(r)) for name, run in runs.items()}, range(args.repeat)
    )
    peaks = {name: peak_mib(run) for name, run in runs.items()}
    ap_fast, ap_coco = coco_eval("faster-coco-eval", frames, shapes), coco_eval("pycocotools", frames, shapes)
    for name, t in times.items():
        print(
            f"{name:55s}: median {np.median(t):7.2f} s, best {min(t):7.2f} s ({args.repeat} interleaved "
            f"rounds), peak {peaks[name]:7.1f} MiB (tracemalloc)"
        )
    print(f"AP@0.5: faster-coco-eval {ap_fast:.6f}, pycocotools {ap_coco:.6f} (the same boxes, the same AP)")
    t_ours, t_fast, t_coco = (float(np.median(t)) for t in times.values())
    m_ours, m_coco = peaks[next(iter(runs))], peaks[list(runs)[2]]
    print(
        f"ratio faster-coco-eval / ropewatch: {t_fast / t_ours:.2f}x time (target >= 1.5x); "
        f"COCOeval / ropewatch: {t_coco / t_ours:.2f}x time, {m_coco / m_ours:.2f}x memory"
    )
    print(f"linearity (ropewatch only, best of {args.repeat} runs each):")
    per_frame = {}
    for n in sorted({max(1, args.frames // 4), max(1, args.frames // 2), args.frames}):
        f, s, k = shapes_of(n, args.persons)
        t = min(timed_once(ours, f, s, k) for _ in range(args.repeat))
        per_frame[n] = t / n
        print(f"  {n:6d} frames {len(s):7d} boxes: {t:6.2f} s  ({t / n * 1e3:.3f} ms/frame)")
    lo, hi = min(per_frame), max(per_frame)
    print(f"  time per frame at {hi} vs {lo} frames: {per_frame[hi] / per_frame[lo]:.2f}x (1.00 = linear)")
    finish(session)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
