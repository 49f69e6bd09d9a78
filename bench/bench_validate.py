"""Benchmark: split + match + metrics + JSON report on a generated job, beside faster-coco-eval and
pycocotools' COCOeval.

    .venv/bin/python bench/bench_validate.py [--frames 10000] [--persons 10] [--repeat 3]

The job (default 10,000 frames, ~100,000 manual + ~100,000 auto person boxes) is generated in
memory; fetching is not timed. faster-coco-eval (``COCOeval_faster``, C++) and COCOeval run on the
same boxes with one IoU threshold (0.5), one area range and maxDets high enough for every frame;
their AP@0.5 must agree (printed), and their time includes turning the boxes into COCO dicts. All
three are timed in the same process, one after the other, best of ``--repeat`` runs each (so a
first run's lazy imports, a stray GC pause or a busy neighbour do not count), with peak Python
memory from tracemalloc; the ratios are the figures (ropewatch must stay at least 1.5x faster than
faster-coco-eval on 10,000 frames). A sweep over frame counts, best of ``--repeat`` runs each too,
shows whether our time is linear in the number of frames.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time
import tracemalloc

import numpy as np

from ropewatch_validator.cvat import parse
from ropewatch_validator.evaluation.match import Settings, match, select
from ropewatch_validator.render import report
from ropewatch_validator.render.model import Source
from ropewatch_validator.sandbox import synthetic


def shapes_of(n_frames: int, persons: float):
    job = synthetic.generate(
        n_frames, persons_per_frame=persons, p_extra=0.8, real_scores=True, extras=False, seed=7
    )
    shapes, skipped, _ = parse.shapes_table(job.annotations, parse.parse_labels(job.labels), n_frames - 1)
    return parse.frames_table(job.meta, 0), shapes, skipped


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


def timed(repeat: int, fn, *args) -> tuple[float, float]:
    """Best wall time of ``repeat`` plain runs (the first pays each library's lazy imports and warm-up),
    then peak memory of one more run under tracemalloc (which slows it)."""
    elapsed = min(timed_once(fn, *args) for _ in range(repeat))
    tracemalloc.start()
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return elapsed, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--persons", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3, help="runs of each timing (the best is kept)")
    args = ap.parse_args()
    frames, shapes, skipped = shapes_of(args.frames, args.persons)
    n_auto = int(shapes["source"].isin(("auto", "semi-auto")).sum())
    print(
        f"job: {args.frames} frames, {len(shapes)} boxes "
        f"({n_auto} auto/semi-auto, {len(shapes) - n_auto} manual)"
    )
    t_ours, m_ours = timed(args.repeat, ours, frames, shapes, skipped)
    t_fast, m_fast = timed(args.repeat, coco_eval, "faster-coco-eval", frames, shapes)
    t_coco, m_coco = timed(args.repeat, coco_eval, "pycocotools", frames, shapes)
    ap_fast, ap_coco = coco_eval("faster-coco-eval", frames, shapes), coco_eval("pycocotools", frames, shapes)
    rows = (
        ("ropewatch split+match+metrics+report.json", t_ours, m_ours),
        ("faster-coco-eval to-COCO+index+evaluate+accumulate", t_fast, m_fast),
        ("pycocotools COCOeval to-COCO+index+evaluate+accumulate", t_coco, m_coco),
    )
    for name, t, m in rows:
        print(f"{name:55s}: {t:7.2f} s (best of {args.repeat}), peak {m:7.1f} MiB (tracemalloc)")
    print(f"AP@0.5: faster-coco-eval {ap_fast:.6f}, pycocotools {ap_coco:.6f} (the same boxes, the same AP)")
    print(
        f"ratio faster-coco-eval / ropewatch: {t_fast / t_ours:.2f}x time (target >= 1.5x); "
        f"COCOeval / ropewatch: {t_coco / t_ours:.2f}x time, {m_coco / m_ours:.2f}x memory"
    )
    print(f"linearity (ropewatch only, best of {args.repeat} runs each):")
    per_frame = {}
    for n in (args.frames // 4, args.frames // 2, args.frames):
        f, s, k = shapes_of(n, args.persons)
        t = min(timed_once(ours, f, s, k) for _ in range(args.repeat))
        per_frame[n] = t / n
        print(f"  {n:6d} frames {len(s):7d} boxes: {t:6.2f} s  ({t / n * 1e3:.3f} ms/frame)")
    lo, hi = min(per_frame), max(per_frame)
    print(f"  time per frame at {hi} vs {lo} frames: {per_frame[hi] / per_frame[lo]:.2f}x (1.00 = linear)")


if __name__ == "__main__":
    main()
