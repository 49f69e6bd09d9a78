"""Function log records with known content, for the trace tests, the demo and bench/bench_join.py.

The records follow the function log record contract in the README exactly (the same keys the
function writes), so the reader is exercised on the real layout.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

import numpy as np

from ropewatch_core.decision import p_correct, values
from ropewatch_core.jsonio import utc_iso
from ropewatch_core.records import INFERENCE, LOGGER_NAME, detection_fields, inference_fields
from ropewatch_core.spec import ATTRIBUTE, FUNCTION_NAME


def iso(ts: datetime) -> str:
    return utc_iso(ts)


def inference_record(
    *,
    sha256: str,
    pixel_sha256: str | None,
    width: int,
    height: int,
    boxes: Sequence[Sequence[float]],
    logits: Sequence[float],
    timestamp: datetime,
    thr: float = 0.5,
    temperature: float = 1.0,
    model_version: str = "test-v1",
    detector_scores: Sequence[float | None] | None = None,
    request_id: str | None = None,
) -> dict:
    """One ``event == "inference"`` record, built by the core's record builders (ropewatch_core.records)
    like the function's, plus the fields its logger adds; boxes rounded to 2 decimals as the function does."""
    scores = detector_scores if detector_scores is not None else [0.9] * len(boxes)
    dets = []
    for box, z, s in zip(boxes, logits, scores):
        p = float(p_correct(z, temperature))
        dets.append(detection_fields([round(float(v), 2) for v in box], values([p], thr)[0], p, float(z), s))
    fields = inference_fields(
        model_version=model_version,
        model_sha256="0" * 64,
        thr=thr,
        temperature=temperature,
        image={
            "sha256": sha256,
            "pixel_sha256": pixel_sha256,
            "width": width,
            "height": height,
            "format": "PNG",
            "bytes": 0,
        },
        detector_threshold=0.5,
        boxes_given=False,
        detections=dets,
        timings_ms={"decode": 1.0, "detect": 1.0, "classify": 1.0, "total": 3.0},
    )
    return {
        "timestamp": iso(timestamp),
        "level": "info",
        "event": INFERENCE,
        "logger": LOGGER_NAME,
        "request_id": request_id or str(uuid.uuid4()),
        "worker_id": "0",
        "function": FUNCTION_NAME,
        **fields,
    }


def noise_lines(rng: np.random.Generator, n: int, start: datetime) -> list[str]:
    """What else shows up in `docker logs`: Nuclio's own lines, failures, plain text."""
    out = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            out.append(f'{iso(start)} processor (I) Starting triggers {{"triggers": ["http"]}}')
        elif kind == 1:
            out.append(
                json.dumps(
                    {
                        "timestamp": iso(start + timedelta(seconds=i)),
                        "level": "error",
                        "event": "request_failed",
                        "request_id": str(uuid.uuid4()),
                        "error": "bad_image",
                        "message": "not an image",
                    }
                )
            )
        else:
            out.append("Traceback-free plain text line " + str(int(rng.integers(0, 1 << 30))))
    return out


def _flip(value: str) -> str:
    return "correct" if value == "wrong" else "wrong"


def _logit_for(value: str, rng: np.random.Generator, thr: float, temperature: float) -> float:
    """A logit on the right side of the cut for ``value``, at least 0.05 away from it."""
    cut = temperature * float(np.log(thr / (1 - thr)))
    step = 0.05 + float(rng.exponential(1.5))
    return cut + step if value == "correct" else cut - step


def records_for_job(
    shapes,
    fingerprints,
    *,
    rng: np.random.Generator,
    when: datetime,
    cutoff: datetime,
    attribute: str = ATTRIBUTE,
    corrected_share: float = 0.2,
    deleted_share: float = 0.3,
    reencoded_share: float = 0.1,
    rerun_share: float = 0.1,
    unlogged_frames: Sequence[int] = (),
    thr: float = 0.5,
    temperature: float = 1.0,
    model_version: str = "test-v1",
) -> tuple[list[dict], dict]:
    """Log records that explain a job's shapes, and the lifecycle counts they must produce.

    ``shapes``: person rectangles (frame, source, x1..y2, attribute); ``fingerprints``: frame, sha256,
    pixel_sha256, width, height. ``auto`` shapes are logged with their box (a share with the other
    attribute value: corrected by a person), ``semi-auto`` ones with a box shifted by 2-4 px
    (the geometry a person then edited), plus far-away detections that no longer exist (deleted).
    Some frames are logged with other bytes (only the pixel key joins), some get an older and a later
    (after ``cutoff``) re-run, and ``unlogged_frames`` get no record at all.
    """
    expected = {
        "accepted": 0,
        "attribute_corrected": 0,
        "geometry_edited": 0,
        "deleted": 0,
        "added": int((~shapes["source"].isin(["auto", "semi-auto"])).sum()),
        "unjoined_auto": 0,
        "unjoined_semi_auto": 0,
        "attribute_unmapped": 0,
        "by_pixel_sha256": 0,
        "reruns": 0,
        "scores": {},
    }
    by_frame = {f: g for f, g in shapes.groupby("frame")}
    records = []
    for fp in fingerprints.itertuples(index=False):
        g = by_frame.get(fp.frame)
        if fp.frame in set(unlogged_frames):
            if g is not None:
                expected["unjoined_auto"] += int((g["source"] == "auto").sum())
                expected["unjoined_semi_auto"] += int((g["source"] == "semi-auto").sum())
            continue
        boxes, logits, values = [], [], []
        for s in g.itertuples(index=False) if g is not None else ():
            final = getattr(s, attribute)
            box = [s.x1, s.y1, s.x2, s.y2]
            if s.source == "auto":
                corrected = rng.random() < corrected_share
                logged = _flip(final) if corrected else final
                expected["attribute_corrected" if corrected else "accepted"] += 1
            elif s.source == "semi-auto":
                logged = final
                box = [v + float(rng.uniform(2, 4)) for v in box]
                expected["geometry_edited"] += 1
            else:
                continue
            z = _logit_for(logged, rng, thr, temperature)
            boxes.append(box)
            logits.append(z)
            values.append(final)
        if rng.random() < deleted_share:
            x = float(rng.uniform(0, max(1, fp.width - 12)))
            boxes.append([x, 0.0, x + 4.0, 4.0])  # tiny, above everyone: overlaps no kept box enough
            logits.append(_logit_for("wrong", rng, thr, temperature))
            expected["deleted"] += 1
        reencoded = rng.random() < reencoded_share
        expected["by_pixel_sha256"] += int(reencoded)
        sha = ("e" * 64) if reencoded else fp.sha256
        rec = inference_record(
            sha256=sha,
            pixel_sha256=fp.pixel_sha256,
            width=int(fp.width),
            height=int(fp.height),
            boxes=boxes,
            logits=logits,
            timestamp=when,
            thr=thr,
            temperature=temperature,
            model_version=model_version,
            request_id=f"frame-{fp.frame}",
        )
        records.append(rec)
        if rng.random() < rerun_share:  # an older run with other boxes, and one after the cutoff
            expected["reruns"] += 1
            for ts, tag in ((when - timedelta(days=1), "old"), (cutoff + timedelta(hours=1), "late")):
                records.append(
                    inference_record(
                        sha256=sha,
                        pixel_sha256=fp.pixel_sha256,
                        width=int(fp.width),
                        height=int(fp.height),
                        boxes=[[1.0, 1.0, 3.0, 3.0]],
                        logits=[9.0],
                        timestamp=ts,
                        model_version=model_version,
                        request_id=f"frame-{fp.frame}-{tag}",
                    )
                )
        for det, z in zip(rec["detections"], logits):
            expected["scores"][(int(fp.frame), tuple(det["box"]))] = round(z, 6)  # as logged
    return records, expected
