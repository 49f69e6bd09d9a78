"""What a team-mode run left in PostgreSQL: the queue's validate_job tasks by status, and the history's
runs per job (one per job is "validated exactly once")."""

from __future__ import annotations

import time
from collections import Counter

import psycopg
import sqlalchemy as sa

from ropewatch_validator.ops.history import normalize_url


def job_counts(db: str) -> Counter:
    """The validate_job tasks by status."""
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs "
            "WHERE task_name = 'ropewatch.validate_job' GROUP BY status"
        ).fetchall()
    return Counter({status: n for status, n in rows})


def wait_until_done(db: str, total: int, timeout: float) -> Counter:
    """The task counts once ``total`` tasks ended and none waits or runs."""
    deadline = time.monotonic() + timeout
    counts = job_counts(db)
    while time.monotonic() < deadline:
        counts = job_counts(db)
        if counts["succeeded"] + counts["failed"] >= total and not counts["todo"] and not counts["doing"]:
            return counts
        time.sleep(0.5)
    raise AssertionError(f"queue not drained in {timeout} s: {dict(counts)}")


def runs_per_job(db: str) -> Counter:
    """The history's runs by job id (any store URL or SQLite path)."""
    engine = sa.create_engine(normalize_url(db))
    try:
        with engine.connect() as conn:
            return Counter(r.job_id for r in conn.execute(sa.text("SELECT job_id FROM runs")))
    finally:
        engine.dispose()
