"""Benchmark: jobs per minute with 1, 2 and 4 ``ropewatch worker`` processes (team mode, issue 20).

The sandbox CVAT (served from this process) holds ``--jobs`` generated jobs of ``--frames`` frames in
task 11. Each round gets a fresh database on the PostgreSQL server: the workers are started and
registered, then ``ropewatch queue add --task 11`` queues every job, and the round ends when the queue
is drained; the workers are then stopped with SIGTERM. The rounds take turns (1, 2, 4, 1, 2, 4 workers
for ``--rounds 2``), so a change of load hits every worker count alike.

jobs/min counts from the first job a worker started to the last one it finished (procrastinate's own
event times), so worker start-up is not in it. Every round also checks that each job was validated
exactly once: one succeeded task and one history run per job, none lost (exit 1 if not).

    .venv/bin/python bench/bench_queue.py                     # 300 jobs of 20 frames, 1,2,4 workers, 2 rounds
    .venv/bin/python bench/bench_queue.py --db postgresql://USER@HOST:PORT   # a server of yours

Without ``--db`` it starts a throwaway PostgreSQL cluster (the suite's ``tests/support/postgres.py``,
Debian's server binaries); with it, the server must let the user create and drop databases (one per
round, dropped at its end).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from _protocol import add_arguments, finish, interleaved, ratio_line, start

from ropewatch_validator.app.queue import TASK
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the suite's PostgreSQL cluster
from support.postgres import throwaway_server

ROPEWATCH = Path(sys.executable).with_name("ropewatch")  # the venv's, as a worker host runs it
TASK_ID, FIRST_JOB = 11, 1000
WORKER_OPTIONS = ("--format", "json", "--no-thumbnails", "--job-deadline", "60")


@dataclass(frozen=True)
class Round:
    workers: int
    span_s: float  # from the first task started to the last one finished
    tasks: Counter[str]  # procrastinate statuses of the validate_job tasks
    runs: Counter[int]  # history runs per job id
    exit_codes: tuple[int, ...]

    @property
    def jobs_per_min(self) -> float:
        return 60.0 * self.tasks["succeeded"] / self.span_s if self.span_s > 0 else 0.0

    def problems(self, n_jobs: int) -> list[str]:
        """Why this round is not "every job validated exactly once" (empty when it is)."""
        expected = {FIRST_JOB + i for i in range(n_jobs)}
        out = []
        if self.tasks != Counter({"succeeded": n_jobs}):
            out.append(f"tasks {dict(self.tasks)}")
        if lost := expected - set(self.runs):
            out.append(f"{len(lost)} job(s) never stored")
        if twice := [j for j, n in self.runs.items() if n > 1]:
            out.append(f"{len(twice)} job(s) stored more than once")
        if extra := set(self.runs) - expected:
            out.append(f"{len(extra)} unknown job(s) stored")
        if any(self.exit_codes):
            out.append(f"worker exit codes {list(self.exit_codes)}")
        return out


def with_database(server: str, name: str) -> str:
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextmanager
def postgres(db: str | None) -> Iterator[str]:
    """A PostgreSQL server URL: ``--db``'s, or a throwaway cluster's, removed at the end."""
    if db:
        yield db
        return
    with throwaway_server() as url:
        yield url


@contextmanager
def database(server: str) -> Iterator[str]:
    """A fresh database for one round (an empty queue and history), dropped after it."""
    name = "bench_queue_" + uuid.uuid4().hex[:10]
    admin = with_database(server, "postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def ropewatch(*argv: str, env: dict[str, str]) -> None:
    done = subprocess.run([str(ROPEWATCH), *argv], env=env, capture_output=True, text=True, timeout=600)
    if done.returncode:
        raise SystemExit(f"bench_queue: ropewatch {argv[0]} exited {done.returncode}: {done.stderr[-500:]}")


def scalar(db: str, sql: str, *params: object) -> Any:
    with psycopg.connect(db) as conn:
        row = conn.execute(sql, params).fetchone()
    return row[0] if row else None


def task_counts(db: str) -> Counter[str]:
    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs WHERE task_name = %s GROUP BY status",
            (TASK,),
        ).fetchall()
    return Counter({status: n for status, n in rows})


def wait_for(what: str, done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench_queue: {what} not within {timeout_s:g} s")
        time.sleep(0.2)


def one_round(url: str, server: str, n_jobs: int, workers: int, work: Path) -> Round:
    """Start ``workers`` workers on a fresh database, queue every job, wait until the queue is drained."""
    work.mkdir(parents=True)
    with database(server) as db:
        env = {**os.environ, "ROPEWATCH_LOCK_DIR": str(work / "locks")}
        ropewatch("queue", "status", "--db", db, env=env)  # the schema, before workers race to apply it
        logs = [(work / f"worker-{workers}-{i}.log").open("w") for i in range(workers)]
        procs = [
            subprocess.Popen(
                [str(ROPEWATCH), "worker", "--server-host", url, "--db", db, "--out", str(work / "out")]
                + list(WORKER_OPTIONS),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            for log in logs
        ]
        try:
            wait_for(
                f"{workers} registered worker(s)",
                lambda: scalar(db, "SELECT count(*) FROM procrastinate_workers") >= workers,
                120,
            )
            ropewatch("queue", "add", "--task", str(TASK_ID), "--server-host", url, "--db", db, env=env)

            def drained() -> bool:
                if stopped := [p.returncode for p in procs if p.poll() is not None]:
                    raise SystemExit(f"bench_queue: a worker exited {stopped[0]} (its log: {work})")
                counts = task_counts(db)
                return not counts["todo"] and not counts["doing"] and sum(counts.values()) >= n_jobs

            wait_for("the drained queue", drained, 3600)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            codes = tuple(p.wait(timeout=120) for p in procs)
            for log in logs:
                log.close()
        span = float(
            scalar(
                db,
                "SELECT extract(epoch FROM max(e.at) FILTER (WHERE e.type IN ('succeeded', 'failed')) "
                "- min(e.at) FILTER (WHERE e.type = 'started')) FROM procrastinate_events e "
                "JOIN procrastinate_jobs j ON j.id = e.job_id WHERE j.task_name = %s",
                TASK,
            )
            or 0.0
        )
        tasks = task_counts(db)
        with psycopg.connect(db) as conn:
            runs = Counter(dict(conn.execute("SELECT job_id, count(*) FROM runs GROUP BY job_id").fetchall()))
    return Round(workers, span, tasks, runs, codes)


def label(workers: int) -> str:
    return f"{workers} worker{'s' if workers > 1 else ''}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300, help="sandbox jobs per round (default 300)")
    parser.add_argument("--frames", type=int, default=20, help="frames per job (default 20)")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts, in turn (default 1,2,4)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds (default 2)")
    parser.add_argument(
        "--db", help="a PostgreSQL server URL (postgresql://USER@HOST:PORT); default: a throwaway cluster"
    )
    add_arguments(parser)
    args = parser.parse_args()
    try:
        counts = [int(w) for w in args.workers.split(",")]
    except ValueError:
        parser.error(f"--workers takes counts like 1,2,4, not {args.workers!r}")
    if args.jobs < 1 or args.frames < 1 or args.rounds < 1 or min(counts) < 1:
        parser.error("--jobs, --frames, --rounds and every --workers count must be 1 or more")
    session = start("bench_queue", args)
    state = sandbox.CvatState()
    for i in range(args.jobs):
        state.add(
            synthetic.generate(args.frames, job_id=FIRST_JOB + i, task_id=TASK_ID, seed=i, extras=False)
        )
    with postgres(args.db) as server, sandbox.serve(state) as (url, _), tempfile.TemporaryDirectory() as tmp:
        where = "--db server" if args.db else "a throwaway cluster (tests/support/postgres.py)"
        print(f"sandbox CVAT: {args.jobs} jobs of {args.frames} frames (task {TASK_ID}); PostgreSQL: {where}")
        print(f"worker: ropewatch worker {' '.join(WORKER_OPTIONS)} (one process each, --concurrency 1)")
        print(f"rounds: {', '.join(map(str, counts * args.rounds))} workers; a fresh database each")
        rounds = interleaved(
            {
                label(w): (lambda r, w=w: one_round(url, server, args.jobs, w, Path(tmp) / f"r{r}-{w}"))
                for w in counts
            },
            range(args.rounds),
        )
    bad = []
    for name, runs in rounds.items():
        each = ", ".join(f"{r.jobs_per_min:.1f} in {r.span_s:.1f} s" for r in runs)
        problems = [p for r in runs for p in r.problems(args.jobs)]
        bad += problems
        once = "yes" if not problems else "NO: " + "; ".join(problems)
        print(
            f"{name:<9}  median {median(r.jobs_per_min for r in runs):8.1f} jobs/min (rounds {each}); "
            f"every job validated exactly once: {once}"
        )
    print(ratio_line("jobs/min", {k: median(r.jobs_per_min for r in v) for k, v in rounds.items()}))
    finish(session)
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
