"""Team scale: validation as procrastinate tasks on the team's PostgreSQL (``--db postgresql://…``).

procrastinate keeps the queue in the same database as the history (its own ``procrastinate_*``
tables), so a team adds no broker. What it guarantees is what we rely on:

* ``queueing_lock`` = the job's key: a job waiting in the queue is queued once, however many scans or
  webhooks ask for it (the next request is refused as ``AlreadyEnqueued`` and counted);
* ``lock`` = the same key: no two workers, on any host, validate one job at the same time;
* a worker that dies leaves its job ``doing`` with a stale heartbeat: the periodic ``recover_stalled``
  task hands it back to the queue, and the history's unique job state keeps it once in history;
* a failed validation (CVAT down, a 5xx, a timeout) is retried with exponential backoff; after the last
  attempt the job ends ``failed`` and its one-line reason is kept (``ops.queue_store``) for
  ``ropewatch queue status``.

The work itself is ``app.validate.run_validation`` for one job: the same locks, report files, history
row and alert outbox as a cron run of ``validate-job``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from ropewatch_core.errors import InputError, ServiceError
from ropewatch_core.records import one_line
from ropewatch_validator.app.validate import JobSelection, ValidateRequest, list_jobs, run_validation
from ropewatch_validator.ops.schedule import JobStatus

log = structlog.get_logger("ropewatch.queue")

QUEUE = "validate"
TASK = "ropewatch.validate_job"
RECOVER = "ropewatch.recover_now"  # a worker's first job: hand back what dead workers left doing
MAX_ATTEMPTS = 5
BACKOFF_S = 4  # waits 16, 64, 256, 1024 s: a CVAT restart is ridden out, a dead server ends failed
STALLED_AFTER_S = 60.0  # a worker heartbeats every 10 s; this long without one, its jobs are handed back


class JobFailed(ServiceError):
    """One job's validation failed; procrastinate retries it, then keeps it failed with this reason."""


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs: the validate-job request every task starts from (connection, options,
    store, rules); ``scopes`` are what the periodic scan lists."""

    request: ValidateRequest
    scopes: tuple[JobSelection, ...] = ()
    scan_cron: str = "*/15 * * * *"
    max_attempts: int = MAX_ATTEMPTS
    backoff_s: float = BACKOFF_S
    stalled_after_s: float = STALLED_AFTER_S

    def __post_init__(self) -> None:
        if self.max_attempts < 1 or not self.backoff_s >= 0 or not self.stalled_after_s > 0:
            raise InputError(
                "the queue needs attempts >= 1, a backoff >= 0 s and a stalled-after > 0 s, got "
                f"{self.max_attempts}, {self.backoff_s}, {self.stalled_after_s}"
            )


def conninfo_of(db: str) -> str:
    """The libpq URL of a SQLAlchemy PostgreSQL URL (``postgresql+psycopg://`` → ``postgresql://``);
    anything else cannot hold a procrastinate queue."""
    scheme, sep, rest = db.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
        raise InputError("the queue needs --db postgresql://… (the team's store); SQLite runs use cron")
    return f"postgresql://{rest}"


def job_key(host: str, job_id: int) -> str:
    """The queueing lock and lock of one job: one per (CVAT host, job)."""
    return f"{host.rstrip('/')}#job-{int(job_id)}"


def job_deferrer(app: Any, host: str, job_id: int) -> Any:
    """The validate_job task of one job, configured with its locks: every way a job is queued (a scan,
    ``queue add``, a webhook) goes through here, so a job waits in the queue at most once."""
    key = job_key(host, job_id)
    return app.tasks[TASK].configure(queueing_lock=key, lock=key)


def build_app(conninfo: str, worker: WorkerConfig | None = None) -> Any:
    """The procrastinate App with ropewatch's tasks registered on it. A worker's app closes over its
    ``worker`` config (a task needs nothing but its arguments); without one the app only queues and
    reads the queue (``ropewatch queue``), and registers no periodic task."""
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
    tries = worker.max_attempts if worker else MAX_ATTEMPTS
    # procrastinate's max_attempts counts retries after the first run (it stops once a job has failed
    # that many times before): ours counts every run
    retry = (
        procrastinate.RetryStrategy(
            max_attempts=tries - 1, exponential_wait=int(worker.backoff_s if worker else BACKOFF_S)
        )
        if tries > 1
        else False  # one try: procrastinate's 0 would mean "retry for ever"
    )

    @app.task(name=TASK, queue=QUEUE, retry=retry, pass_context=True)
    def validate_job(context: Any, host: str, job_id: int) -> str:
        if worker is None:
            raise InputError("this process only queues jobs: run `ropewatch worker` to validate them")
        return _validate(worker, context, host, job_id)

    if worker is None:
        return app
    config = worker

    @app.periodic(cron=config.scan_cron, periodic_id="scan")
    @app.task(name="ropewatch.scan", queue=QUEUE, queueing_lock="ropewatch.scan")
    def scan(timestamp: int) -> int:
        return defer_jobs(app, _listed(config)).queued

    @app.task(name=RECOVER, queue=QUEUE, queueing_lock=RECOVER)
    async def recover_now() -> int:
        return await recover(app, config.stalled_after_s)

    @app.periodic(cron="* * * * *", periodic_id="recover")
    @app.task(name="ropewatch.recover_stalled", queue=QUEUE, queueing_lock="ropewatch.recover_stalled")
    async def recover_stalled(timestamp: int) -> int:
        return await recover(app, config.stalled_after_s)

    return app


def _listed(config: WorkerConfig) -> list[tuple[str, int]]:
    from ropewatch_validator.cvat.client import connect

    conn = connect(config.request.connection)
    refs = []
    for scope in config.scopes:
        refs += list_jobs(conn, scope, config.request.options.job_deadline_s)
    return [(conn.host, ref.job_id) for ref in refs]


def _validate(config: WorkerConfig, context: Any, host: str, job_id: int) -> str:
    """Run one job as a cron run would; a failure raises (so procrastinate retries) and, on the last
    attempt, is kept with its reason."""
    from ropewatch_validator.ops.history import open_store
    from ropewatch_validator.ops.queue_store import clear_failure, record_failure

    configured = config.request.connection.host.rstrip("/")
    if host.rstrip("/") != configured:  # a worker serves one CVAT server; never send its token elsewhere
        raise InputError(f"job {job_id} is for {host}, this worker serves {configured}")
    request = dataclasses.replace(config.request, jobs=JobSelection(job_ids=(int(job_id),)))
    result = run_validation(request)
    (outcome,) = result.outcomes
    attempt = int(context.job.attempts) + 1  # procrastinate counts the runs before this one
    store = open_store(config.request.db)
    if outcome.status in (JobStatus.FAILED, JobStatus.LOCKED):
        if attempt >= config.max_attempts:
            record_failure(store, host, job_id, attempt, outcome.detail)
        raise JobFailed(f"job {job_id}: {outcome.detail}")
    clear_failure(store, host, job_id)
    return str(outcome.status)


@dataclass(frozen=True)
class Deferred:
    """What asking for a list of jobs did: queued now, or already waiting (queued once)."""

    queued: int = 0
    already_queued: int = 0


def defer_jobs(app: Any, jobs: Iterable[tuple[str, int]]) -> Deferred:
    """Queue ``(host, job)`` pairs for validation, each at most once while it waits."""
    from procrastinate.exceptions import AlreadyEnqueued

    queued = already = 0
    for host, job_id in jobs:
        try:
            job_deferrer(app, host, job_id).defer(host=host, job_id=int(job_id))
            queued += 1
        except AlreadyEnqueued:
            already += 1
    log.info("jobs_deferred", queued=queued, already_queued=already)
    return Deferred(queued, already)


def defer_recovery(app: Any) -> None:
    """Queue one recovery of stalled jobs (a starting worker's first job), unless one waits already."""
    from procrastinate.exceptions import AlreadyEnqueued

    with contextlib.suppress(AlreadyEnqueued):
        app.tasks[RECOVER].defer()


async def recover(app: Any, stalled_after_s: float = STALLED_AFTER_S) -> int:
    """Hand every job of a worker that stopped heartbeating back to the queue (its attempt counts)."""
    jobs = list(await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after_s))
    for job in jobs:
        await app.job_manager.retry_job(job, retry_at=datetime.datetime.now(datetime.timezone.utc))
    if jobs:
        log.warning("stalled_jobs_recovered", jobs=[j.id for j in jobs])
    return len(jobs)


@dataclass(frozen=True)
class QueueStatus:
    """Counts per status of the validation queue, and the failed jobs with their reasons."""

    counts: dict[str, int]
    retried: int
    failed: tuple[tuple[str, int, int, str], ...]  # host, job, attempts, reason


def status(app: Any, db: str) -> QueueStatus:
    from ropewatch_validator.ops.history import open_store
    from ropewatch_validator.ops.queue_store import failures

    counts: dict[str, int] = {}
    retried = 0
    for job in app.job_manager.list_jobs(queue=QUEUE, task=TASK):
        counts[str(job.status)] = counts.get(str(job.status), 0) + 1
        retried += job.attempts > 0 and str(job.status) in ("todo", "doing", "succeeded")
    return QueueStatus(counts, retried, tuple(failures(open_store(db))))


def apply_schema(app: Any, conninfo: str) -> bool:
    """Create procrastinate's tables once (a worker's first start); True when it did. Serialised by a
    transaction-level advisory lock, so workers starting together create them once."""
    import psycopg

    try:
        with psycopg.connect(conninfo, connect_timeout=10) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(727274)")  # any constant: ropewatch's schema lock
            row = conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone()
            if row and row[0]:
                return False
            conn.execute(app.schema_manager.get_schema())
    except psycopg.Error as exc:
        raise ServiceError(f"queue database: {one_line(exc)}") from None
    return True


class QueueHandoff:
    """The webhook receiver's hand-off in team mode: a job CVAT says is done is deferred at once as a
    ``validate_job`` task (queued once while it waits), on the receiver's own event loop."""

    def __init__(self, conninfo: str) -> None:
        self.app = build_app(conninfo)

    @contextlib.asynccontextmanager
    async def lifespan(self, _: Any) -> AsyncIterator[None]:
        async with self.app.open_async():
            yield

    async def __call__(self, host: str, job_id: int) -> bool:
        """True when queued now, False when the job was already waiting."""
        from procrastinate.exceptions import AlreadyEnqueued

        try:
            await job_deferrer(self.app, host, job_id).defer_async(host=host, job_id=int(job_id))
        except AlreadyEnqueued:
            return False
        return True
