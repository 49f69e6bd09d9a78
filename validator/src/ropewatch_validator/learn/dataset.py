"""`ropewatch dataset build`: person crops and train/val manifests for the fast filter, from CVAT.

Jobs (ids, ``--task`` or ``--project``) are read through the validator's client (cvat/fetch); the
reference persons are the rectangles of the validated sources (``manual``, ``file``, ``consensus``;
evaluation.match.Settings.ref_sources) whose ``safety_rope_use`` is set. Each is cut with the fast
filter's crop rule (``--filter`` takes ``expand`` from a filter checkpoint; default the expert's) from
the frame as CVAT sends it to the function, and written as PNG; the frame itself is kept under
``frames/`` so ``cascade tune`` can run the expert on it. Frames come through the frame cache
(``--frame-cache``, shared with validate-job). The split is by task, never by frame: every task is in
train or in val, never both (a stable hash orders the tasks; ``--val-share`` of them, at least one,
go to val). A rerun reuses every frame already written and every crop made from the same frame bytes
and pixel box (the crop's file name is keyed by both: a rebuild with another rule cuts new crops), all
writes atomic, and rewrites the manifests. Persons that cannot be cut are skipped and counted by reason
(no value set, an empty box, a box outside the frame, a frame that cannot be decoded or is not the size
CVAT's meta says) in ``dataset.json`` and the summary line.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ropewatch_core.errors import InputError

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class DatasetOptions:
    """Which jobs to cut, where to, and how; checked when made."""

    output_dir: Path
    job_ids: tuple[int, ...] = ()
    tasks: tuple[int, ...] = ()
    projects: tuple[int, ...] = ()
    val_share: float = 0.2
    filter: Path | None = None
    frame_cache: Path | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.val_share < 1.0:
            raise InputError(f"--val-share must be in (0, 1), got {self.val_share}")


@dataclass(frozen=True)
class DatasetSummary:
    """What a build wrote: ``dataset.json``'s content, and the persons it skipped by reason."""

    output_dir: Path
    info: dict[str, Any]
    skipped: dict[str, int] = field(default_factory=dict)


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
    """Manifest rows of one job, writing its frames and crops that are not there yet. Persons that
    cannot be cut are counted in ``skipped`` by reason (see box_problems; ``frame_undecodable``;
    ``frame_size_mismatch`` when the decoded frame is not the size CVAT's meta gives its boxes in)."""
    import numpy as np

    from ropewatch_core.files import atomic_write
    from ropewatch_core.image import ImageError, load_frame
    from ropewatch_core.model.fast_filter import crop_boxes
    from ropewatch_core.spec import ATTRIBUTE, ATTRIBUTE_VALUES
    from ropewatch_validator.cvat.fetch import fetch_job
    from ropewatch_validator.cvat.frames import job_frame_fetcher
    from ropewatch_validator.evaluation.match import Settings, select
    from ropewatch_validator.learn.data import box_problems, crop_name

    job = fetch_job(conn, job_id)
    refs = select(job.shapes, Settings(), Settings().ref_sources)
    valued = refs[ATTRIBUTE].isin(ATTRIBUTE_VALUES)
    skipped["no_value"] += int((~valued).sum())
    refs = refs[valued]
    meta = {int(f.frame): (int(f.width), int(f.height)) for f in job.frames.itertuples()}
    fetch = job_frame_fetcher(conn, job, cache)
    rows: list[dict] = []
    for frame, group in refs.groupby("frame", sort=True):
        frame_file = f"frames/job{job_id}/{int(frame)}.bin"
        if not (out / frame_file).is_file():
            (out / frame_file).parent.mkdir(parents=True, exist_ok=True)
            atomic_write(out / frame_file, fetch(int(frame)))
        frame_bytes = (out / frame_file).read_bytes()
        try:
            img = load_frame(frame_bytes)
        except ImageError:
            skipped["frame_undecodable"] += len(group)
            continue
        size = meta.get(int(frame), (0, 0))
        if min(size) > 0 and size != (img.width, img.height):
            skipped["frame_size_mismatch"] += len(group)
            continue
        boxes = group[["x1", "y1", "x2", "y2"]].to_numpy(dtype=np.float64)
        problems = box_problems(boxes, img.width, img.height)
        skipped.update(p for p in problems if p)
        px = crop_boxes(np.nan_to_num(boxes), expand, img.width, img.height)
        for r, box, c, problem in zip(group.itertuples(), boxes, px, problems):
            if problem:
                continue
            person = f"s{int(r.shape_id)}" if not _nan(r.shape_id) else f"t{int(r.track_id)}"
            name = crop_name(job_id, int(frame), person, frame_bytes, c)
            if not (out / name).is_file():
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


def build_dataset(conn: Any, opts: DatasetOptions) -> DatasetSummary:
    """Cut every valued reference person of the jobs, split by task, write manifests and dataset.json."""
    from ropewatch_core.files import atomic_write
    from ropewatch_core.model.checkpoint import read_checkpoint
    from ropewatch_core.model.fast_filter import DEFAULT_EXPAND
    from ropewatch_validator.cvat.fetch import find_jobs
    from ropewatch_validator.learn.data import write_manifest

    expand = dict(DEFAULT_EXPAND)
    if opts.filter:
        expand = dict(read_checkpoint(opts.filter)[0].get("expand") or expand)
    out = Path(opts.output_dir)
    skipped: Counter = Counter()
    jobs = list(opts.job_ids)
    for key, ids in (("task_id", opts.tasks), ("project_id", opts.projects)):
        for i in ids:
            jobs += [j["id"] for j in find_jobs(conn, job_type="annotation", **{key: i})]
    jobs = sorted(set(jobs))
    if not jobs:
        raise InputError("no jobs given (JOB_ID, --task or --project)")
    out.mkdir(parents=True, exist_ok=True)
    rows = [r for j in jobs for r in job_rows(conn, j, out, expand, opts.frame_cache, skipped)]
    tasks = sorted({r["task"] for r in rows})
    if len(tasks) < 2:
        raise InputError(f"persons from {len(tasks)} task(s); a split by task needs at least two")
    val = split_tasks(tasks, opts.val_share, conn.host)
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
    atomic_write(out / "dataset.json", json.dumps(info, indent=2))
    return DatasetSummary(out, info, dict(skipped))
