"""Validate many jobs in one (cron) run: per-job locks, per-job isolation, one exit code.

Exit codes, for cron and CI:

- ``0``: every job was validated (or skipped as unchanged / not updated since) and no rule fired;
- ``1``: at least one rule fired, and every job could be validated;
- ``2``: at least one job could not be validated or stored (CVAT down, 5xx, a broken history
  store...), or was still locked by another run after waiting ``lock_wait_s`` for it: a locked job
  was not validated by anyone we know of (the other run may be stuck). ``2`` wins over ``1``: the run
  is incomplete, so "no alert" cannot be claimed; the other jobs are still validated, stored and
  alerted on, and the log names each failure.

A job that another run holds is waited for (``lock_wait_s``), then checked again: if that run stored
it, it counts as ``unchanged``. ``since="last"`` is per host and job: a job is skipped only when the
newest stored run of that host and job has the listed deleted-frames digest and an ``updated_date``
at least as new as the listed one, so a job whose last attempt failed (nothing stored) is tried again
by the next run, and so is a job whose frames were deleted or restored (CVAT moves no date then).

A job's output is one unit (``stage``): its report folder is written under a temporary name, renamed
into place, and only then is the history transaction committed; if the commit fails, the folder is
put back as it was. So a history row always has its reports, and reports without a row (a kill
between the two) are rewritten by the next run, which finds the job state not stored.

Alerts that could not be delivered stay in the outbox for the next run; they do not change the
exit code (the rule firing already does).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Protocol

import structlog
from filelock import FileLock, Timeout

from ropewatch_validator.ops.alerts.delivery import DeliveryResult, Notifier
from ropewatch_validator.ops.alerts.rules import AlertConfig, record_and_queue
from ropewatch_validator.ops.history import STATE_SEP, HistoryError, HistoryStore, make_state, parse_time
from ropewatch_validator.render.model import Report

log = structlog.get_logger("ropewatch.schedule")

EXIT_OK, EXIT_ALERT, EXIT_FAILED = 0, 1, 2
ENV_LOCK_DIR = "ROPEWATCH_LOCK_DIR"


@dataclass(frozen=True)
class JobRef:
    """A job to validate. With ``updated_date`` (and ``host``) known from a listing, an
    unchanged job is skipped before its annotations are fetched; ``state`` is the digest of its
    deleted frames (``cvat.parse.deleted_digest``), the part of a job's state no date shows."""

    job_id: int
    updated_date: str | datetime | None = None
    host: str | None = None
    state: str = ""


class Staged(Protocol):
    """A job's outputs written aside (see the module doc): publish, then undo if the commit fails."""

    def publish(self) -> None: ...

    def undo(self) -> None: ...

    def finish(self) -> None: ...


class JobStatus(str, Enum):
    """What became of one job in a batch (a str, so logs and comparisons read the plain word)."""

    OK = "ok"
    ALERT = "alert"
    FAILED = "failed"
    UNCHANGED = "unchanged"
    LOCKED = "locked"
    NOT_SINCE = "not-since"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class JobOutcome:
    job_id: int
    status: JobStatus
    detail: str = ""
    alerts: tuple[str, ...] = ()


@dataclass(frozen=True)
class BatchResult:
    outcomes: tuple[JobOutcome, ...]
    delivery: DeliveryResult

    @property
    def exit_code(self) -> int:
        statuses = {o.status for o in self.outcomes}
        if statuses & {JobStatus.FAILED, JobStatus.LOCKED}:
            return EXIT_FAILED
        return EXIT_ALERT if JobStatus.ALERT in statuses else EXIT_OK


def default_lock_dir() -> Path:
    base = os.environ.get(ENV_LOCK_DIR) or os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / "ropewatch-locks"


def _lock_path(lock_dir: Path, host: str | None, job_id: int) -> Path:
    tag = hashlib.sha256((host or "").rstrip("/").encode()).hexdigest()[:12]
    return lock_dir / f"job-{tag}-{job_id}.lock"


def parse_since(since: str | datetime | None) -> str | datetime | None:
    """``"last"``, an ISO time (naive = UTC) or None; a ValueError names the accepted forms."""
    if since is None or since == "last" or isinstance(since, datetime):
        return since
    try:
        return parse_time(since)
    except ValueError:
        raise ValueError(
            f"--since takes an ISO time (2026-11-23, 2026-11-23T10:00:00Z) or 'last', not {since!r}"
        ) from None


def _not_since(ref: JobRef, since: str | datetime | None, store: HistoryStore) -> bool:
    """Whether ``ref`` is skipped as not updated since ``since`` (a time, or ``"last"``).

    ``"last"``: skipped only when the newest stored run of this host and job has the listed
    deleted-frames digest (``ref.state``) and a date at least as new. The digest is compared first:
    CVAT moves no date when frames are deleted or restored, so the date alone says "not since"."""
    if not ref.updated_date or since is None:
        return False
    listed = parse_time(ref.updated_date)
    if since != "last":
        return listed <= since  # type: ignore[operator]
    last = store.last_job_state(ref.host, ref.job_id) if ref.host else None
    if last is None:
        return False
    stamp, _, frames = last.partition(STATE_SEP)
    return frames == ref.state and listed <= parse_time(stamp)


def _validate_and_store(
    ref: JobRef,
    validate_one: Callable[[int], Report],
    store: HistoryStore,
    rules: AlertConfig,
    notifier: Notifier,
    since: str | datetime | None,
    force: bool,
    stage: Callable[[Report], Staged] | None = None,
) -> JobOutcome:
    if _not_since(ref, since, store):
        return JobOutcome(ref.job_id, JobStatus.NOT_SINCE, f"updated {ref.updated_date}")
    if (
        ref.updated_date
        and ref.host
        and not force
        and since != "last"  # "last" compared the newest stored state: a job restored to an older one is due
        and store.has_run(make_state(ref.host, ref.job_id, ref.updated_date, ref.state))
    ):
        return JobOutcome(ref.job_id, JobStatus.UNCHANGED, f"already validated at {ref.updated_date}")
    try:
        report = validate_one(ref.job_id)
        staged = stage(report) if stage else None
    except Exception as exc:  # one job's failure must not stop the others
        return JobOutcome(ref.job_id, JobStatus.FAILED, f"could not validate: {type(exc).__name__}: {exc}")
    try:
        if staged:
            staged.publish()
        fired, created = record_and_queue(store, report, rules, notifier.targets)
    except Exception as exc:  # a broken store, a report without its job state...: this job only
        if staged:
            staged.undo()
        return JobOutcome(ref.job_id, JobStatus.FAILED, f"could not store: {type(exc).__name__}: {exc}")
    if staged:
        staged.finish()
    names = tuple(a.rule for a in fired)
    detail = (
        "stored" if created else "this job state was stored before; alerts it fired then not queued again"
    )
    return JobOutcome(ref.job_id, JobStatus.ALERT if fired else JobStatus.OK, detail, names)


def run_batch(
    jobs: Iterable[int | JobRef],
    validate_one: Callable[[int], Report],
    store: HistoryStore,
    rules: AlertConfig,
    notifier: Notifier | None = None,
    since: str | datetime | None = None,
    *,
    lock_dir: str | Path | None = None,
    force: bool = False,
    outbox_wait_s: float = 60.0,
    lock_wait_s: float = 60.0,
    stage: Callable[[Report], Staged] | None = None,
) -> BatchResult:
    """Validate each job under its own file lock and deliver the outbox; see the module doc."""
    notifier = notifier or Notifier(rules.webhooks)
    lock_root = Path(lock_dir) if lock_dir else default_lock_dir()
    lock_root.mkdir(parents=True, exist_ok=True)
    steps: list[DeliveryResult] = []

    def flush() -> None:
        """Send the outbox; one sender at a time, so overlapping runs never POST an alert twice."""
        try:
            with FileLock(lock_root / "outbox.lock", timeout=outbox_wait_s):
                step = notifier.flush(store)
        except Timeout:
            log.warning("outbox_busy", detail="another run is sending alerts; pending ones go out next run")
            return
        except HistoryError as exc:
            log.error("outbox_unavailable", error=str(exc))
            return
        steps.append(step)

    try:
        since_at = parse_since(since)
    except ValueError as exc:
        log.error("batch_failed", error=str(exc))
        return BatchResult((JobOutcome(0, JobStatus.FAILED, str(exc)),), DeliveryResult())
    flush()  # what earlier runs could not deliver
    outcomes = []
    for item in jobs:
        ref = item if isinstance(item, JobRef) else JobRef(int(item))
        lock = FileLock(_lock_path(lock_root, ref.host, ref.job_id), timeout=lock_wait_s)
        try:
            with lock:
                outcome = _validate_and_store(
                    ref, validate_one, store, rules, notifier, since_at, force, stage
                )
        except Timeout:
            outcome = JobOutcome(
                ref.job_id,
                JobStatus.LOCKED,
                f"not validated: another run held this job's lock for over {lock_wait_s:g} s",
            )
        except (HistoryError, ValueError) as exc:  # the store, or an unparsable updated_date
            outcome = JobOutcome(ref.job_id, JobStatus.FAILED, str(exc))
        outcomes.append(outcome)
        level = "error" if outcome.status is JobStatus.FAILED else "info"
        getattr(log, level)(
            "job_done",
            job=ref.job_id,
            status=outcome.status.value,
            detail=outcome.detail,
            alerts=outcome.alerts,
        )
        if outcome.alerts:
            flush()
    delivery = DeliveryResult.total(steps)
    result = BatchResult(tuple(outcomes), delivery)
    log.info(
        "batch_done",
        exit_code=result.exit_code,
        jobs=len(outcomes),
        alerts_sent=delivery.sent,
        alerts_pending=delivery.failed,
    )
    return result
