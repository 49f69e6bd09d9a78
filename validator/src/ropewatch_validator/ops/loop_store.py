"""The history store's part of the CVAT loop: which review issues ropewatch opened in CVAT and for what.

An issue is remembered by (host, job, object, disagreement) the moment CVAT returns its id, each in its
own transaction, so a run cut short forgets nothing it opened. An open issue (``resolved_at`` null) is
what a re-run compares the report's disagreements against: the same disagreement on the same object
opens nothing; one that is gone is resolved in CVAT and then here.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from ropewatch_validator.ops.history import (
    HistoryStore,
    filled_shapes,
    review_issues,
    sample_frames,
    utc_now,
    validation_queue,
    webhook_events,
)


@dataclass(frozen=True)
class OpenIssue:
    issue_id: int
    object_key: str
    disagreement: str
    frame: int


def open_issues(store: HistoryStore, host: str, job_id: int) -> list[OpenIssue]:
    """The issues ropewatch opened on this job and has not resolved, oldest first."""
    t = review_issues
    query = (
        sa.select(t.c.issue_id, t.c.object_key, t.c.disagreement, t.c.frame)
        .where(t.c.host == host.rstrip("/"), t.c.job_id == job_id, t.c.resolved_at.is_(None))
        .order_by(t.c.id)
    )
    with store._connect(write=False) as conn:
        rows = conn.execute(query)
        return [OpenIssue(int(r.issue_id), r.object_key, r.disagreement, int(r.frame)) for r in rows]


def remember_issue(store: HistoryStore, host: str, job_id: int, issue: OpenIssue) -> None:
    with store._connect(write=True) as conn:
        conn.execute(
            sa.insert(review_issues).values(
                host=host.rstrip("/"),
                job_id=job_id,
                object_key=issue.object_key,
                disagreement=issue.disagreement,
                issue_id=issue.issue_id,
                frame=issue.frame,
                opened_at=utc_now(),
            )
        )


def mark_resolved(store: HistoryStore, host: str, issue_id: int) -> None:
    t = review_issues
    with store._connect(write=True) as conn:
        conn.execute(
            sa.update(t)
            .where(t.c.host == host.rstrip("/"), t.c.issue_id == issue_id, t.c.resolved_at.is_(None))
            .values(resolved_at=utc_now())
        )


@dataclass(frozen=True)
class Filled:
    shape_id: int
    frame: int
    value: str
    model_version: str | None
    request_id: str | None


def filled_values(store: HistoryStore, host: str, job_id: int) -> dict[int, str]:
    """shape id -> the value ``annotate fill`` last wrote on it."""
    t = filled_shapes
    query = sa.select(t.c.shape_id, t.c.value).where(t.c.host == host.rstrip("/"), t.c.job_id == job_id)
    with store._connect(write=False) as conn:
        return {int(r.shape_id): r.value for r in conn.execute(query)}


def remember_filled(store: HistoryStore, host: str, job_id: int, rows: list[Filled]) -> None:
    """Record one frame's writes in one transaction (a shape filled again replaces its row)."""
    t = filled_shapes
    now = utc_now()
    with store._connect(write=True) as conn:
        ids = [r.shape_id for r in rows]
        conn.execute(
            sa.delete(t).where(t.c.host == host.rstrip("/"), t.c.job_id == job_id, t.c.shape_id.in_(ids))
        )
        if rows:
            conn.execute(
                sa.insert(t),
                [
                    {
                        "host": host.rstrip("/"),
                        "job_id": job_id,
                        "shape_id": r.shape_id,
                        "frame": r.frame,
                        "value": r.value,
                        "model_version": r.model_version,
                        "request_id": r.request_id,
                        "filled_at": now,
                    }
                    for r in rows
                ],
            )


@dataclass(frozen=True)
class SampledFrame:
    frame: int
    stratum: str
    stratum_frames: int  # N_h
    stratum_drawn: int  # n_h

    @property
    def inclusion_prob(self) -> float:
        return self.stratum_drawn / self.stratum_frames


def remember_sample(
    store: HistoryStore, host: str, task_id: int, gt_job_id: int, frames: list[SampledFrame]
) -> None:
    """The design of the task's GT job, in one transaction (a task has one GT job: a new one replaces it)."""
    t = sample_frames
    now = utc_now()
    with store._connect(write=True) as conn:
        conn.execute(sa.delete(t).where(t.c.host == host.rstrip("/"), t.c.task_id == task_id))
        conn.execute(
            sa.insert(t),
            [
                {
                    "host": host.rstrip("/"),
                    "task_id": task_id,
                    "frame": f.frame,
                    "stratum": f.stratum,
                    "stratum_frames": f.stratum_frames,
                    "stratum_drawn": f.stratum_drawn,
                    "inclusion_prob": f.inclusion_prob,
                    "gt_job_id": gt_job_id,
                    "drawn_at": now,
                }
                for f in frames
            ],
        )


def stored_sample(store: HistoryStore, host: str, task_id: int) -> tuple[int | None, list[SampledFrame]]:
    """(GT job id, its sampled frames) of a task, or (None, []) when ropewatch drew none."""
    t = sample_frames
    query = sa.select(t).where(t.c.host == host.rstrip("/"), t.c.task_id == task_id).order_by(t.c.frame)
    with store._connect(write=False) as conn:
        rows = list(conn.execute(query))
    frames = [
        SampledFrame(int(r.frame), r.stratum, int(r.stratum_frames), int(r.stratum_drawn)) for r in rows
    ]
    return (int(rows[0].gt_job_id) if rows else None), frames


@dataclass(frozen=True)
class Queued:
    id: int
    host: str
    job_id: int
    reason: str
    queued_at: str


def accept_webhook(store: HistoryStore, digest: str, event: str, job: tuple[str, int, str] | None) -> bool:
    """Record one webhook body and, for ``job`` = (host, id, reason), queue the job, in one transaction.
    False when this exact body was seen before (a redelivery or a replay): nothing is queued again.
    A job already waiting is not queued twice."""
    try:
        with store._connect(write=True) as conn:
            conn.execute(sa.insert(webhook_events).values(digest=digest, event=event, received_at=utc_now()))
            if job is not None:
                host, job_id, reason = job
                q = validation_queue
                waiting = conn.execute(
                    sa.select(q.c.id).where(q.c.host == host, q.c.job_id == job_id, q.c.done_at.is_(None))
                ).first()
                if waiting is None:
                    conn.execute(
                        sa.insert(q).values(host=host, job_id=job_id, reason=reason, queued_at=utc_now())
                    )
    except sa_exc.IntegrityError:
        return False
    return True


def queued_jobs(store: HistoryStore, host: str | None = None) -> list[Queued]:
    """Jobs waiting for validation, oldest first."""
    q = validation_queue
    query = sa.select(q).where(q.c.done_at.is_(None)).order_by(q.c.id)
    if host is not None:
        query = query.where(q.c.host == host.rstrip("/"))
    with store._connect(write=False) as conn:
        return [Queued(int(r.id), r.host, int(r.job_id), r.reason, r.queued_at) for r in conn.execute(query)]


def mark_done(store: HistoryStore, queue_id: int, result: str) -> None:
    q = validation_queue
    with store._connect(write=True) as conn:
        conn.execute(sa.update(q).where(q.c.id == queue_id).values(done_at=utc_now(), result=result[:256]))
