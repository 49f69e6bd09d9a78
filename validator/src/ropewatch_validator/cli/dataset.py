"""`ropewatch dataset build`: person crops and train/val manifests for the fast filter, from CVAT.

Jobs (ids, ``--task`` or ``--project``) are read through the validator's client (cvat/fetch); the
reference persons are the rectangles of the validated sources (``manual``, ``file``, ``consensus``;
evaluation.match.Settings.ref_sources) whose ``safety_rope_use`` is set. Each is cut with the fast
filter's crop rule (``--filter`` takes ``expand`` from a filter checkpoint; default the expert's) from
the frame as CVAT sends it to the function, and written as PNG; the frame itself is kept under
``frames/`` so ``cascade tune`` can run the expert on it. Frames come through the frame cache
(``--frame-cache``, shared with validate-job). The split is by task, never by frame: every task is in
train or in val, never both (a stable hash orders the tasks; ``--val-share`` of them, at least one,
go to val). A rerun reuses every frame and crop already written (all writes are atomic) and rewrites the
manifests. Skips (no value set, frames that cannot be decoded) are counted and printed.
Exit codes: 0 built, 2 could not run.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    from ropewatch_validator.cli.validate import add_connection_arguments

    ds = subparsers.add_parser("dataset", help="build the fast filter's crop dataset from CVAT")
    sub = ds.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    p = sub.add_parser("build", help="crops + train/val manifests (split by task) from CVAT jobs")
    p.add_argument("job_ids", nargs="*", type=int, metavar="JOB_ID")
    p.add_argument("--task", type=int, action="append", default=[], help="all annotation jobs of a task")
    p.add_argument(
        "--project", type=int, action="append", default=[], help="all annotation jobs of a project"
    )
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--val-share", type=float, default=0.2, help="share of tasks in val (default 0.2)")
    p.add_argument(
        "--filter", type=Path, default=None, help="take the crop rule (expand) from this checkpoint"
    )
    p.add_argument("--frame-cache", type=Path, default=None, help="frame cache folder (as validate-job's)")
    add_connection_arguments(p)
    p.set_defaults(func=run)


def split_tasks(tasks: list[int], val_share: float, host: str) -> set[int]:
    """The val tasks: the first ``val_share`` (at least one, never all) in sha256(host:task) order."""
    order = sorted(tasks, key=lambda t: hashlib.sha256(f"{host}:{t}".encode()).hexdigest())
    n_val = min(len(order) - 1, max(1, round(val_share * len(order))))
    return set(order[:n_val])


def _png(rgb: Any) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def job_rows(
    conn: Any, job_id: int, out: Path, expand: dict, cache: Path | None, skipped: Counter
) -> list[dict]:
    """Manifest rows of one job, writing its frames and crops that are not there yet."""
    import numpy as np

    from ropewatch_core.files import atomic_write
    from ropewatch_core.image import ImageError, load_frame
    from ropewatch_core.model.fast_filter import crop_boxes
    from ropewatch_core.spec import ATTRIBUTE, ATTRIBUTE_VALUES
    from ropewatch_validator.cvat.fetch import fetch_job
    from ropewatch_validator.cvat.frames import job_frame_fetcher
    from ropewatch_validator.evaluation.match import Settings, select

    job = fetch_job(conn, job_id)
    refs = select(job.shapes, Settings(), Settings().ref_sources)
    valued = refs[ATTRIBUTE].isin(ATTRIBUTE_VALUES)
    skipped["no_value"] += int((~valued).sum())
    refs = refs[valued]
    fetch = job_frame_fetcher(conn, job, cache)
    rows: list[dict] = []
    for frame, group in refs.groupby("frame", sort=True):
        frame_file = f"frames/job{job_id}/{int(frame)}.bin"
        names = [
            f"crops/job{job_id}/{int(frame)}_"
            + (f"s{int(r.shape_id)}" if not _nan(r.shape_id) else f"t{int(r.track_id)}")
            + ".png"
            for r in group.itertuples()
        ]
        have = all((out / n).is_file() for n in names) and (out / frame_file).is_file()
        if not (out / frame_file).is_file():
            (out / frame_file).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(out / frame_file, fetch(int(frame)))
        boxes = group[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)
        try:
            img = load_frame((out / frame_file).read_bytes())
        except ImageError:
            skipped["frame_undecodable"] += len(group)
            continue
        px = crop_boxes(boxes, expand, img.width, img.height)
        for name, r, box, c in zip(names, group.itertuples(), boxes, px):
            if not have:
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                atomic_write(out / name, _png(img.rgb[c[1] : c[3], c[0] : c[2]]))
            rows.append(
                {
                    "crop": name,
                    "y": int(getattr(r, ATTRIBUTE) == "correct"),
                    "task": job.task_id,
                    "job": job_id,
                    "frame": int(frame),
                    "shape_id": "" if _nan(r.shape_id) else int(r.shape_id),
                    **{k: round(float(v), 2) for k, v in zip(("x1", "y1", "x2", "y2"), box)},
                    **{k: int(v) for k, v in zip(("cx1", "cy1", "cx2", "cy2"), c)},
                    "frame_file": frame_file,
                }
            )
    return rows


def _nan(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def run(args: argparse.Namespace) -> int:
    from ropewatch_core.model.checkpoint import CheckpointError, read_checkpoint
    from ropewatch_core.model.fast_filter import DEFAULT_EXPAND
    from ropewatch_validator.cli.filter_data import write_manifest
    from ropewatch_validator.cli.validate import check_connection_arguments, connect_from_args
    from ropewatch_validator.cvat.fetch import FetchError, find_jobs

    def fail(problem: str) -> int:
        print(f"ropewatch dataset build: {problem}", file=sys.stderr)
        return 2

    problem = check_connection_arguments(args)
    if problem:
        return fail(problem)
    if not 0.0 < args.val_share < 1.0:
        return fail(f"--val-share must be in (0, 1), got {args.val_share}")
    expand = dict(DEFAULT_EXPAND)
    out = Path(args.output_dir)
    skipped: Counter = Counter()
    try:
        if args.filter:
            expand = dict(read_checkpoint(args.filter)[0].get("expand") or expand)
        conn = connect_from_args(args)
        jobs = list(args.job_ids)
        for key, ids in (("task_id", args.task), ("project_id", args.project)):
            for i in ids:
                jobs += [j["id"] for j in find_jobs(conn, job_type="annotation", **{key: i})]
        jobs = sorted(set(jobs))
        if not jobs:
            return fail("no jobs given (JOB_ID, --task or --project)")
        out.mkdir(parents=True, exist_ok=True)
        rows = [r for j in jobs for r in job_rows(conn, j, out, expand, args.frame_cache, skipped)]
    except (FetchError, CheckpointError, OSError, ValueError) as exc:
        return fail(" ".join(str(exc).split())[:300])
    tasks = sorted({r["task"] for r in rows})
    if len(tasks) < 2:
        return fail(f"persons from {len(tasks)} task(s); a split by task needs at least two")
    val = split_tasks(tasks, args.val_share, conn.host)
    split = {"train": [r for r in rows if r["task"] not in val], "val": [r for r in rows if r["task"] in val]}
    for name, part in split.items():
        write_manifest(out / f"{name}_manifest.csv", part)
    info = {
        "expand": expand,
        "host": conn.host,
        "jobs": jobs,
        "tasks": {"train": sorted(set(tasks) - val), "val": sorted(val)},
        "counts": {k: {"crops": len(v), "correct": sum(r["y"] for r in v)} for k, v in split.items()},
        "skipped": dict(skipped),
    }
    from ropewatch_core.files import atomic_write

    atomic_write(out / "dataset.json", json.dumps(info, indent=2))
    print(
        f"{out}: {len(split['train'])} train crops ({len(tasks) - len(val)} tasks), {len(split['val'])} "
        f"val crops ({len(val)} tasks) from {len(jobs)} jobs; skipped {dict(skipped) or 'none'}"
    )
    return 0
