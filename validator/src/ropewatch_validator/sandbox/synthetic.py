"""Deterministic CVAT jobs with known truth, for the demo, the tests and the benchmark.

A generated job is the set of API bodies a real CVAT server would return for it (job, task, labels,
data/meta, annotations), all valid under CVAT's OpenAPI schema. Manual person boxes are the
reference; the model's `auto` boxes are copies of them with jitter, misses, extras, attribute flips
and a share marked `semi-auto` (edited by a person), so every error type of the validator appears.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ropewatch_core.spec import ATTRIBUTE, ATTRIBUTE_VALUES

VALUES = ATTRIBUTE_VALUES
UPDATED = "2026-11-20T10:00:00.000000Z"


@dataclass
class SyntheticJob:
    """API bodies of one job; ``frames_bytes`` maps frame number -> encoded image (optional)."""

    job: dict
    task: dict
    labels: list[dict]
    meta: dict
    annotations: dict
    frames_bytes: dict[int, bytes] = field(default_factory=dict)


def label_ids(task_id: int) -> tuple[int, int, int]:
    """(person, helmet, safety_rope_use spec) ids, unique per task as on a real server."""
    return 10 * task_id + 1, 10 * task_id + 2, 10 * task_id + 1


def labels_body(task_id: int) -> list[dict]:
    person_id, helmet_id, spec_id = label_ids(task_id)
    rope = {
        "id": spec_id,
        "name": ATTRIBUTE,
        "mutable": True,
        "input_type": "select",
        "default_value": "wrong",
        "values": list(VALUES),
    }
    common = {
        "sublabels": [],
        "has_parent": False,
        "parent_id": None,
        "project_id": None,
        "task_id": task_id,
        "type": "rectangle",
    }
    return [
        {"id": person_id, "name": "person", "color": "#ff0000", "attributes": [rope], **common},
        {"id": helmet_id, "name": "helmet", "color": "#00ff00", "attributes": [], **common},
    ]


def job_body(
    job_id: int,
    task_id: int,
    n_frames: int,
    *,
    job_type: str = "annotation",
    start_frame: int = 0,
    updated: str = UPDATED,
    project_id: int | None = None,
) -> dict:
    return {
        "id": job_id,
        "url": f"http://localhost/api/jobs/{job_id}",
        "task_id": task_id,
        "project_id": project_id,
        "type": job_type,
        "stage": "annotation",
        "state": "in progress",
        "mode": "annotation",
        "dimension": "2d",
        "media_type": "image",
        "frame_count": n_frames,
        "start_frame": start_frame,
        "stop_frame": start_frame + n_frames - 1,
        "data_chunk_size": 36,
        "data_compressed_chunk_type": "imageset",
        "data_original_chunk_type": "imageset",
        "created_date": "2026-11-19T09:00:00.000000Z",
        "updated_date": updated,
        "assignee": None,
        "guide_id": None,
        "bug_tracker": None,
        "issues": {"url": f"http://localhost/api/issues?job_id={job_id}", "count": 0},
        "labels": {"url": f"http://localhost/api/labels?job_id={job_id}"},
        "organization": None,
        "target_storage": None,
        "source_storage": None,
        "assignee_updated_date": None,
        "parent_job_id": None,
        "consensus_replicas": 0,
        "replicas_count": 0,
        "task_name": f"task {task_id}",
        "project_name": None,
    }


def task_body(task_id: int, n_frames: int, *, project_id: int | None = None) -> dict:
    return {
        "id": task_id,
        "url": f"http://localhost/api/tasks/{task_id}",
        "name": f"task {task_id}",
        "project_id": project_id,
        "mode": "annotation",
        "dimension": "2d",
        "media_type": "image",
        "size": n_frames,
        "status": "annotation",
        "created_date": "2026-11-19T09:00:00.000000Z",
        "updated_date": UPDATED,
        "overlap": 0,
        "segment_size": n_frames,
        "subset": "",
        "organization": None,
        "jobs": {
            "url": f"http://localhost/api/jobs?task_id={task_id}",
            "count": 1,
            "completed": 0,
            "validation": 0,
        },
        "labels": {"url": f"http://localhost/api/labels?task_id={task_id}"},
        "bug_tracker": "",
        "assignee": None,
        "owner": None,
        "data_chunk_size": 36,
        "image_quality": 70,
    }


def meta_body(
    n_frames: int,
    width: int,
    height: int,
    *,
    start_frame: int = 0,
    deleted: list[int] | None = None,
    included: list[int] | None = None,
) -> dict:
    numbers = included if included is not None else range(start_frame, start_frame + n_frames)
    return {
        "chunks_updated_date": UPDATED,
        "chunk_size": 36,
        "size": n_frames,
        "image_quality": 70,
        "start_frame": start_frame,
        "stop_frame": start_frame + n_frames - 1,
        "frame_filter": "",
        "frames": [
            {"width": width, "height": height, "name": f"site_{f:06d}.jpg", "related_files": 0}
            for f in numbers
        ],
        "deleted_frames": sorted(deleted or []),
        "included_frames": included,
    }


def _rect(
    shape_id: int,
    frame: int,
    box: Sequence[float] | np.ndarray,
    source: str,
    value: str | None,
    score: float | None,
    label_id: int,
    spec_id: int,
    occluded: bool = False,
) -> dict:
    shape = {
        "id": shape_id,
        "type": "rectangle",
        "frame": frame,
        "label_id": label_id,
        "group": 0,
        "source": source,
        "occluded": occluded,
        "outside": False,
        "z_order": 0,
        "rotation": 0.0,
        "points": [round(float(v), 2) for v in box],
        "elements": [],
        "attributes": [] if value is None else [{"spec_id": spec_id, "value": value}],
    }
    if score is not None:
        shape["score"] = float(score)
    return shape


def generate(
    n_frames: int = 50,
    *,
    job_id: int = 101,
    task_id: int = 11,
    persons_per_frame: float = 4.0,
    width: int = 1280,
    height: int = 720,
    seed: int = 0,
    p_miss: float = 0.08,
    p_extra: float = 0.3,
    p_flip: float = 0.1,
    p_semi: float = 0.1,
    p_loc: float = 0.05,
    with_score: bool = True,
    real_scores: bool = False,
    deleted: tuple[int, ...] = (),
    extras: bool = True,
    project_id: int | None = None,
) -> SyntheticJob:
    """One annotation job: manual person boxes + the model's auto copies with known errors.

    ``with_score=False`` emulates CVAT < 2.56 (no ``score`` key); ``real_scores`` gives auto shapes
    the detector confidence (as cvat-cli auto-annotate stores it) instead of CVAT's Nuclio 1.0.
    ``extras`` adds a person track with an ``outside`` keyframe, a polygon and a helmet box.
    """
    rng = np.random.default_rng(seed)
    counts = rng.poisson(persons_per_frame, n_frames)
    total = int(counts.sum())
    frames = np.repeat(np.arange(n_frames), counts)
    w = rng.uniform(30, 160, total)
    h = w * rng.uniform(1.5, 3.0, total)
    x1 = rng.uniform(0, width - w)
    y1 = rng.uniform(0, np.maximum(height - h, 1))
    boxes = np.stack([x1, y1, x1 + w, np.minimum(y1 + h, height)], axis=1)
    truth = rng.choice(VALUES, total, p=(0.35, 0.65))
    occluded = rng.random(total) < 0.15

    u = rng.random((6, total))
    jitter = rng.normal(0, 0.03, (total, 4)) * np.stack([w, h, w, h], axis=1)
    shift = np.where(u[1] < p_loc, 0.45, 0.0)[:, None] * np.stack([w, h, w, h], axis=1)  # localization errors
    auto_boxes = boxes + jitter + shift
    auto_values = np.where(u[2] < p_flip, np.where(truth == "wrong", "correct", "wrong"), truth)
    sources = np.where(u[3] < p_semi, "semi-auto", "auto")
    keep = u[0] >= p_miss
    scores = np.clip(np.where(u[2] < p_flip, 0.55, 0.85) + rng.normal(0, 0.1, total), 0.01, 0.99)

    def score(real: float) -> float | None:
        return None if not with_score else (real if real_scores else 1.0)

    person_id, helmet_id, spec_id = label_ids(task_id)
    ids: dict[str, Any] = {"label_id": person_id, "spec_id": spec_id}
    shapes, sid = [], 1
    for i in range(total):
        shapes.append(
            _rect(
                sid,
                int(frames[i]),
                boxes[i],
                "manual",
                str(truth[i]),
                score(1.0),
                occluded=bool(occluded[i]),
                **ids,
            )
        )
        sid += 1
    for i in np.flatnonzero(keep).tolist():
        shapes.append(
            _rect(
                sid,
                int(frames[i]),
                auto_boxes[i],
                str(sources[i]),
                str(auto_values[i]),
                score(float(scores[i])),
                **ids,
            )
        )
        sid += 1
    n_extra = rng.binomial(n_frames, min(p_extra, 1.0))
    for frame in rng.choice(n_frames, n_extra):
        ew = rng.uniform(30, 120)
        ex, ey = rng.uniform(0, width - ew), rng.uniform(0, height - 2 * ew)
        shapes.append(
            _rect(
                sid,
                int(frame),
                [ex, ey, ex + ew, ey + 2 * ew],
                "auto",
                str(rng.choice(VALUES)),
                score(float(rng.uniform(0.05, 0.6))),
                **ids,
            )
        )
        sid += 1

    tracks = []
    if extras and n_frames >= 6:
        shapes.append(_rect(sid, 1, [10, 10, 50, 60], "manual", None, score(1.0), helmet_id, spec_id))
        shapes.append(
            {
                "id": sid + 1,
                "type": "polygon",
                "frame": 2,
                "label_id": person_id,
                "group": 0,
                "source": "manual",
                "occluded": False,
                "outside": False,
                "z_order": 0,
                "rotation": 0.0,
                "points": [5.0, 5.0, 40.0, 5.0, 20.0, 40.0],
                "elements": [],
                "attributes": [],
            }
        )
        if with_score:
            shapes[-1]["score"] = 1.0
        tracks.append(
            {
                "id": 1,
                "frame": 0,
                "label_id": person_id,
                "group": 0,
                "source": "manual",
                "attributes": [],
                "elements": [],
                "shapes": [
                    {
                        "id": 1,
                        "type": "rectangle",
                        "frame": 0,
                        "occluded": False,
                        "outside": False,
                        "z_order": 0,
                        "rotation": 0.0,
                        "points": [100.0, 100.0, 150.0, 220.0],
                        "attributes": [{"spec_id": spec_id, "value": "correct"}],
                    },
                    {
                        "id": 2,
                        "type": "rectangle",
                        "frame": 2,
                        "occluded": False,
                        "outside": False,
                        "z_order": 0,
                        "rotation": 0.0,
                        "points": [120.0, 100.0, 170.0, 220.0],
                        "attributes": [{"spec_id": spec_id, "value": "wrong"}],
                    },
                    {
                        "id": 3,
                        "type": "rectangle",
                        "frame": 4,
                        "occluded": False,
                        "outside": True,
                        "z_order": 0,
                        "rotation": 0.0,
                        "points": [120.0, 100.0, 170.0, 220.0],
                        "attributes": [],
                    },
                ],
            }
        )
    annotations = {"version": 3, "tags": [], "shapes": shapes, "tracks": tracks}
    return SyntheticJob(
        job=job_body(job_id, task_id, n_frames, project_id=project_id),
        task=task_body(task_id, n_frames, project_id=project_id),
        labels=labels_body(task_id),
        meta=meta_body(n_frames, width, height, deleted=list(deleted)),
        annotations=annotations,
    )
