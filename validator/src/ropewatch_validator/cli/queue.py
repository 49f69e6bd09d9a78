"""`ropewatch worker` and `ropewatch queue {add,status}`: validation as procrastinate tasks on the team's
PostgreSQL (see ``app.queue``). The embedded default (SQLite, cron, file locks) needs none of this."""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from typing import TYPE_CHECKING

from ropewatch_core.errors import InputError
from ropewatch_validator.cli.validate import add_connection_arguments, add_validate_arguments
from ropewatch_validator.ops.history import default_db_url

if TYPE_CHECKING:
    from ropewatch_validator.app.queue import WorkerConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    w = subparsers.add_parser(
        "worker",
        help="validate queued jobs (team mode: --db postgresql://...); any number of hosts",
        description="Run validation tasks from the queue in --db until SIGTERM (the jobs in flight finish "
        "and are stored). --task/--project are the scopes the periodic scan queues; the other options "
        "are validate-job's, applied to every job.",
    )
    add_validate_arguments(w)
    w.add_argument("--concurrency", type=int, default=1, help="jobs validated at once (default 1)")
    w.add_argument(
        "--scan-cron", default="*/15 * * * *", help="when to queue the scopes' jobs (default every 15 min)"
    )
    w.add_argument("--attempts", type=int, default=5, help="tries of a failing job before it ends failed")
    w.add_argument(
        "--retry-backoff", type=float, default=4.0, metavar="S", help="waits S, S^2, S^3... s (default 4)"
    )
    w.add_argument(
        "--stalled-after",
        type=float,
        default=60.0,
        metavar="S",
        help="a worker silent this long is dead: its jobs go back to the queue (default 60)",
    )
    w.set_defaults(func=run_worker, since="last", job_ids=[])  # jobs come from the queue, not the line

    q = subparsers.add_parser("queue", help="the validation queue (team mode): add jobs, show its status")
    qs = q.add_subparsers(dest="queue_command", required=True, metavar="ACTION")
    add = qs.add_parser("add", help="queue jobs for validation (a job already waiting is queued once)")
    add.add_argument("job_ids", nargs="*", type=int, metavar="JOB_ID")
    add.add_argument("--task", type=int, help="every annotation job of this task")
    add.add_argument("--project", type=int, help="every annotation job of this project")
    add.add_argument(
        "--db", help="the team's PostgreSQL URL (the queue and the history; default $ROPEWATCH_DB)"
    )
    add_connection_arguments(add)
    add.set_defaults(func=run_add)
    st = qs.add_parser("status", help="queued, running, succeeded, failed and retried jobs")
    st.add_argument("--db", help="the team's PostgreSQL URL (default $ROPEWATCH_DB)")
    st.add_argument("--json", action="store_true", help="print JSON instead of text")
    st.set_defaults(func=run_status)


def _config(args: argparse.Namespace) -> WorkerConfig:
    from ropewatch_validator.app.queue import WorkerConfig
    from ropewatch_validator.app.validate import JobSelection
    from ropewatch_validator.cli.validate import request_from_args

    request = request_from_args(args)
    scopes = tuple(
        JobSelection(task=t, project=p)
        for t, p in ((args.task, None), (None, args.project))
        if t is not None or p is not None
    )
    return WorkerConfig(
        request, scopes, args.scan_cron, args.attempts, args.retry_backoff, args.stalled_after
    )


def run_worker(args: argparse.Namespace) -> int:
    from ropewatch_validator.app import queue

    if args.concurrency < 1:
        raise InputError(f"--concurrency must be 1 or more, got {args.concurrency}")
    conninfo = queue.conninfo_of(args.db or default_db_url())
    app = queue.build_app(conninfo, _config(args))
    queue.apply_schema(app, conninfo)
    # procrastinate says when the worker starts and stops and each job it runs: through the one handler
    logging.getLogger("procrastinate").setLevel(logging.INFO)
    with app.open():
        queue.defer_recovery(app)
    app.run_worker(
        queues=[queue.QUEUE],
        concurrency=args.concurrency,
        update_heartbeat_interval=10.0,
        stalled_worker_timeout=queue.STALLED_AFTER_S,
    )
    return 0


def run_add(args: argparse.Namespace) -> int:
    from ropewatch_validator.app import queue
    from ropewatch_validator.app.validate import JobSelection, list_jobs
    from ropewatch_validator.cli.validate import check_connection_arguments, connection_settings
    from ropewatch_validator.cvat.client import connect

    problem = check_connection_arguments(args)
    if problem:
        raise InputError(problem)
    conninfo = queue.conninfo_of(args.db or default_db_url())
    conn = connect(connection_settings(args))
    refs = list_jobs(conn, JobSelection(tuple(args.job_ids), args.task, args.project), 1800.0)
    if not refs:
        raise InputError("no jobs given (JOB_ID, --task or --project)")
    app = queue.build_app(conninfo)
    queue.apply_schema(app, conninfo)
    with app.open():
        done = queue.defer_jobs(app, [(conn.host, r.job_id) for r in refs])
    print(f"queued {done.queued} job(s); {done.already_queued} already waiting")
    return 0


def run_status(args: argparse.Namespace) -> int:
    from ropewatch_validator.app import queue

    db = args.db or default_db_url()
    conninfo = queue.conninfo_of(db)
    app = queue.build_app(conninfo)
    queue.apply_schema(app, conninfo)
    with app.open():
        st = queue.status(app, db)
    if args.json:
        print(json.dumps(asdict(st), sort_keys=True))
        return 0
    counts = ", ".join(f"{k} {v}" for k, v in sorted(st.counts.items())) or "empty"
    print(f"validation queue: {counts}; retried and not failed: {st.retried}")
    for host, job_id, attempts, reason in st.failed:
        print(f"failed: {host} job {job_id} after {attempts} attempts: {reason}")
    return 0
