"""Pull one CVAT job into plain tables: its job, labels, frame meta and annotations, assembled.

The transport (auth, deadlines, paging) is :mod:`ropewatch_validator.cvat.client`, the bodies are read
by :mod:`ropewatch_validator.cvat.parse`; :class:`FetchError` (``cvat.client``) is every failure.

``JobData`` fields:
- ``frames``: DataFrame ``frame, data_frame, real_frame, name, width, height, deleted`` (task-absolute
  frame numbers; only a GT job's included frames);
- ``shapes``: DataFrame, one row per rectangle (tracks expanded to per-frame boxes, ``outside``
  respected, rectangles interpolated between keyframes as CVAT does): ``shape_id, track_id, frame,
  label, type, x1, y1, x2, y2, rotation, source, score (NaN when absent), occluded`` plus one column
  per attribute name holding its value (None when unset); shapes off the job's live frames are dropped;
- ``skipped``: counts of shapes and tracks not read as boxes, by type (polygon, mask, skeleton, tag …);
- ``dropped``: shapes and attribute entries not read, by reason;
- ``deleted_digest``: the digest of the deleted frames, part of the history key (CVAT moves no date
  when frames are deleted).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ropewatch_core.records import one_line
from ropewatch_validator.cvat.client import Connection, FetchError, get_json, list_all
from ropewatch_validator.cvat.parse import (
    Label,
    attribute_drops,
    deleted_digest,
    drop_off_job,
    frames_table,
    keyframes_in_job,
    parse_labels,
    shapes_table,
)

MAX_JOB_FRAMES = 10_000_000  # more frames than any CVAT job has: a bound on what a job body may ask for


@dataclass
class JobData:
    host: str
    job_id: int
    task_id: int
    project_id: int | None
    job_updated_date: str
    job_type: str
    frames: pd.DataFrame
    labels: dict[int, Label]
    shapes: pd.DataFrame
    skipped: Counter = field(default_factory=Counter)
    has_score: bool = True
    dropped: Counter = field(default_factory=Counter)  # shapes and attribute entries not read, by reason
    original_chunk_type: str = ""  # "imageset" or "video": decides whether frame bytes can change
    chunks_updated_date: str = ""  # version of the job's frame chunks (the frame cache's key)
    deleted_digest: str = (
        ""  # of the deleted frames ("" without): part of the history key (see deleted_digest)
    )


def fetch_job(conn: Connection, job_id: int) -> JobData:
    """Job, labels, frame meta and annotations of one job (see :func:`job_tables`)."""
    api = conn.api_client
    job = get_json(conn, f"job {job_id}", api.jobs_api.retrieve, job_id)
    labels = list_all(conn, f"labels of job {job_id}", api.labels_api.list, job_id=job_id)
    meta = get_json(conn, f"frame meta of job {job_id}", api.jobs_api.retrieve_data_meta, job_id)
    annotations = get_json(conn, f"annotations of job {job_id}", api.jobs_api.retrieve_annotations, job_id)
    return job_tables(conn.host, job_id, job, labels, meta, annotations)


def job_tables(host: str, job_id: int, job: Any, labels: list, meta: Any, annotations: Any) -> JobData:
    """The tables of one job from its API bodies; shapes off its live frames are counted and dropped.

    A body of another shape than CVAT's (a field missing, a list where an object belongs) is a
    one-line FetchError naming the job and the host, never a KeyError from deep inside.
    """
    try:
        label_table = parse_labels(labels)
        frames = frames_table(job, meta)
        stop = int(job["stop_frame"])
        start = int(job["start_frame"])
        if not 0 <= stop - start <= MAX_JOB_FRAMES:
            raise FetchError(f"job {job_id} on {host}: frames {start}-{stop} are not a job's frame range")
        annotations, outside = keyframes_in_job(annotations, start, stop)
        shapes, skipped, has_score = shapes_table(annotations, label_table, stop)
        shapes, off = drop_off_job(shapes, frames, job)
        dropped = attribute_drops(annotations, label_table) + off + outside
        return JobData(
            host=host,
            job_id=job_id,
            task_id=job.get("task_id"),
            project_id=job.get("project_id"),
            job_updated_date=job.get("updated_date", ""),
            job_type=job.get("type", "annotation"),
            frames=frames,
            labels=label_table,
            shapes=shapes,
            skipped=skipped,
            has_score=has_score,
            dropped=dropped,
            original_chunk_type=str(job.get("data_original_chunk_type") or ""),
            chunks_updated_date=str(meta.get("chunks_updated_date") or ""),
            deleted_digest=deleted_digest(meta),
        )
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise FetchError(
            f"job {job_id} on {host}: unexpected answer from CVAT ({one_line(exc, 200)})"
        ) from None


def fetch_deleted_digest(conn: Connection, job_id: int) -> str:
    """:func:`deleted_digest` of a listed job, from its ``data/meta`` alone (one small request)."""
    return deleted_digest(
        get_json(conn, f"frame meta of job {job_id}", conn.api_client.jobs_api.retrieve_data_meta, job_id)
    )


def fetch_honeypots(conn: Connection, job_id: int) -> dict[int, int]:
    """Honeypot frame -> the validation frame it shows (``GET /api/jobs/{id}/validation_layout``, CVAT
    >= 2.22; tasks with ``validation_mode: gt_pool`` only)."""
    body = get_json(
        conn,
        f"validation layout of job {job_id}",
        conn.api_client.jobs_api.retrieve_validation_layout,
        job_id,
    )
    return dict(zip(body.get("honeypot_frames") or [], body.get("honeypot_real_frames") or []))


def find_jobs(
    conn: Connection,
    *,
    task_id: int | None = None,
    project_id: int | None = None,
    job_type: str | None = None,
) -> list[dict]:
    """Job bodies of a task or project (paged), optionally of one type (``annotation``, ``ground_truth``)."""
    filters = {k: v for k, v in {"task_id": task_id, "project_id": project_id, "type": job_type}.items() if v}
    return list_all(
        conn,
        "jobs " + " ".join(f"{k}={v}" for k, v in filters.items()),
        conn.api_client.jobs_api.list,
        **filters,
    )
