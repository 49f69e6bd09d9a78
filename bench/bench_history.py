"""Benchmark: history store growth per 1,000 validated jobs, this release's layout beside release 0.1's.

    .venv/bin/python bench/bench_history.py [--jobs 1000] [--frames 300] [--persons 4] [--db URL --old-db URL]

One real report is built from a generated job (default 300 frames, ~4 persons each, the size of a
typical CVAT job) and stored ``--jobs`` times as different job states, through ``HistoryStore``
(this release: metric columns, per-class rows and the report without per-object rows, zlib JSON).
For comparison the same runs are stored the way release 0.1 did (its schema, Alembic revision 0001:
the full report.json in ``runs.report``). Size = SQLite file size (or PostgreSQL's
``pg_total_relation_size`` over the tables with ``--db postgresql://...``), before/after, per 1,000 jobs.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa
from _protocol import add_arguments, finish, start

from ropewatch_validator.cvat import fetch
from ropewatch_validator.evaluation.match import Settings, match, select
from ropewatch_validator.ops.history import alembic_config, normalize_url, open_store
from ropewatch_validator.render import report as rpt
from ropewatch_validator.render.model import Report, Source
from ropewatch_validator.sandbox import synthetic

TABLES = (
    "runs",
    "run_classes",
    "baselines",
    "version_references",
    "backtest_pairs",
    "alerts",
    "deliveries",
    "alembic_version",
)


def one_report(n_frames: int, persons: float) -> Report:
    job = synthetic.generate(n_frames, persons_per_frame=persons, real_scores=True, seed=3)
    data = fetch.job_tables("http://cvat.bench", 1, job.job, job.labels, job.meta, job.annotations)
    shapes, skipped = data.shapes, data.skipped
    s = Settings()
    pred, ref = match(select(shapes, s, s.pred_sources), select(shapes, s, s.ref_sources), s.iou)
    source = Source(host="http://cvat.bench", job=1, task=1, project=1, job_updated_date="x")
    return rpt.build(source=source, settings=s, frames=data.frames, pred=pred, ref=ref, skipped=skipped)


def size(engine: sa.Engine, path: Path | None) -> int:
    if path is not None:
        return path.stat().st_size
    with engine.connect() as conn:
        names = [t for t in TABLES if sa.inspect(conn).has_table(t)]
        return sum(conn.exec_driver_sql(f"SELECT pg_total_relation_size('{t}')").scalar_one() for t in names)


def stamp(i: int) -> str:
    return (datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=i)).isoformat()


def as_job(report: Report, i: int) -> Report:
    source = report.source.model_copy(update={"job": i, "job_updated_date": stamp(i)})
    return report.model_copy(update={"source": source})


def store_current(url: str, path: Path | None, report: Report, jobs: int) -> tuple[int, float]:
    store = open_store(url)
    before, t = size(store.engine, path), time.perf_counter()
    for i in range(1, jobs + 1):
        store.record_run(as_job(report, i))
    elapsed = time.perf_counter() - t
    grown = size(store.engine, path) - before
    store.close()
    return grown, elapsed


def store_0_1(url: str, path: Path | None, report: Report, jobs: int) -> int:
    """Release 0.1's layout: its schema (revision 0001) and a full report.json per run."""
    from alembic import command

    engine = sa.create_engine(normalize_url(url))
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
    full = json.loads(report.to_json())
    runs = sa.table(
        "runs",
        *(sa.column(c) for c in ("host", "job_id", "job_updated_date", "recorded_at", "model_version")),
        sa.column("settings", sa.JSON),
        sa.column("report", sa.JSON),
    )
    before = size(engine, path)
    with engine.begin() as conn:
        for i in range(1, jobs + 1):
            conn.execute(
                sa.insert(runs).values(
                    host="http://cvat.bench",
                    job_id=i,
                    job_updated_date=stamp(i),
                    recorded_at="2026-01-01T00:00:00Z",
                    model_version="bench",
                    settings=full["settings"],
                    report=full,
                )
            )
    grown = size(engine, path) - before
    engine.dispose()
    return grown


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--persons", type=float, default=4.0)
    ap.add_argument("--db", help="a PostgreSQL URL (an empty database); default: SQLite files in a temp dir")
    ap.add_argument("--old-db", help="with --db: a second empty PostgreSQL database for the 0.1 layout")
    add_arguments(ap)
    args = ap.parse_args()
    session = start("bench_history", args)
    report = one_report(args.frames, args.persons)
    full = len(report.to_json().encode())
    print(
        f"report: {args.frames} frames, {report.counts.predictions + report.counts.references} boxes, "
        f"report.json {full / 1024:.1f} KiB"
    )
    with tempfile.TemporaryDirectory() as tmp:
        pg = bool(args.db and args.db.startswith("postgres"))
        now_url, old_url = (args.db, args.old_db) if pg else (f"{tmp}/now.sqlite", f"{tmp}/old.sqlite")
        now_path, old_path = (None, None) if pg else (Path(now_url), Path(old_url))
        per = 1000 / args.jobs
        grown, elapsed = store_current(now_url, now_path, report, args.jobs)
        print(
            f"this release: {grown * per / 2**20:8.2f} MiB per 1,000 jobs "
            f"({grown / args.jobs / 1024:.1f} KiB per run; {args.jobs / elapsed:.0f} runs/s stored)"
        )
        if old_url is not None:
            old = store_0_1(old_url, old_path, report, args.jobs)
            print(
                f"release 0.1 : {old * per / 2**20:8.2f} MiB per 1,000 jobs "
                f"({old / args.jobs / 1024:.1f} KiB per run), {old / grown:.0f}x this release"
            )
    finish(session)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
