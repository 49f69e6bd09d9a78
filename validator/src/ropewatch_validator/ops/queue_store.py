"""The history store's part of team mode: the jobs the queue gave up on, and why (one line each)."""

from __future__ import annotations

import sqlalchemy as sa

from ropewatch_validator.ops.history import HistoryStore, queue_failures, utc_now

REASON_LIMIT = 1024


def record_failure(store: HistoryStore, host: str, job_id: int, attempts: int, reason: str) -> None:
    """Keep the last reason a job failed for; one row per (host, job)."""
    key = {"host": host.rstrip("/"), "job_id": int(job_id)}
    line = " ".join(reason.split())[:REASON_LIMIT]
    with store._connect(write=True) as conn:
        conn.execute(sa.delete(queue_failures).where(*(queue_failures.c[k] == v for k, v in key.items())))
        conn.execute(
            sa.insert(queue_failures).values(**key, attempts=attempts, reason=line, failed_at=utc_now())
        )


def clear_failure(store: HistoryStore, host: str, job_id: int) -> None:
    t = queue_failures
    with store._connect(write=True) as conn:
        conn.execute(sa.delete(t).where(t.c.host == host.rstrip("/"), t.c.job_id == int(job_id)))


def failures(store: HistoryStore) -> list[tuple[str, int, int, str]]:
    """(host, job, attempts, reason) of every job that ended failed, newest first."""
    t = queue_failures
    with store._connect(write=False) as conn:
        rows = conn.execute(sa.select(t).order_by(t.c.failed_at.desc(), t.c.job_id))
        return [(r.host, int(r.job_id), int(r.attempts), r.reason) for r in rows]
