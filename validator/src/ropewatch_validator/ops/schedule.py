"""Validate many jobs in one (cron) run: per-job locks, per-job isolation, one exit code.

Exit codes, for cron and CI:

- ``0``: every job was validated (or skipped as unchanged / locked by another run) and no rule fired;
- ``1``: at least one rule fired, and every job could be validated;
- ``2``: at least one job could not be validated or stored (CVAT down, 5xx, a broken history
  store...). ``2`` wins over ``1``: the run is incomplete, so "no alert" cannot be claimed; the
  other jobs are still validated, stored and alerted on, and the log names each failure.

Alerts that could not be delivered stay in the outbox for the next run; they do not change the
exit code (the rule firing already does).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import structlog
from filelock import FileLock, Timeout

from ropewatch_validator.ops.alert import AlertConfig, DeliveryResult, Notifier, record_and_queue
from ropewatch_validator.ops.history import HistoryError, HistoryStore, make_state, parse_time
from ropewatch_validator.render.model import Report

log = structlog.get_logger("ropewatch.schedule")

EXIT_OK, EXIT_ALERT, EXIT_FAILED = 0, 1, 2
ENV_LOCK_DIR = "ROPEWATCH_LOCK_DIR"


@dataclass(frozen=True)
class JobRef:
    """A job to validate. With ``updated_date`` (and ``host``) known from a listing, an
    unchanged job is skipped before anything is fetched."""

    job_id: int
    updated_date: str | datetime | None = None
    host: str | None = None


@dataclass
class JobOutcome:
    job_id: int
    status: str  # ok | alert | failed | unchanged | locked | not-since
    detail: str = ""
    alerts: list[str] = field(default_factory=list)


@dataclass
class BatchResult:
    outcomes: list[JobOutcome]
    delivery: DeliveryResult

    @property
    def exit_code(self) -> int:
        statuses = {o.status for o in self.outcomes}
        if "failed" in statuses:
            return EXIT_FAILED
        return EXIT_ALERT if "alert" in statuses else EXIT_OK


def default_lock_dir() -> Path:
    base = os.environ.get(ENV_LOCK_DIR) or os.environ.get("XDG_RUNTIME_DIR") or "/tmp"
    return Path(base) / "ropewatch-locks"


def _lock_path(lock_dir: Path, host: str | None, job_id: int) -> Path:
    tag = hashlib.sha256((host or "").rstrip("/").encode()).hexdigest()[:12]
    return lock_dir / f"job-{tag}-{job_id}.lock"


def _resolve_since(since: str | datetime | None, store: HistoryStore) -> datetime | None:
    """``"last"`` means the time of the last stored run."""
    if since == "last":
        last = store.last_recorded_at()
        return parse_time(last) if last else None
    return parse_time(since) if since is not None else None


def _validate_and_store(
    ref: JobRef,
    validate_one: Callable[[int], Report],
    store: HistoryStore,
    rules: AlertConfig,
    notifier: Notifier,
    since: datetime | None,
    force: bool,
) -> JobOutcome:
    if ref.updated_date and since is not None and parse_time(ref.updated_date) <= since:
        return JobOutcome(ref.job_id, "not-since", f"updated {ref.updated_date}")
    if (
        ref.updated_date
        and ref.host
        and not force
        and store.has_run(make_state(ref.host, ref.job_id, ref.updated_date))
    ):
        return JobOutcome(ref.job_id, "unchanged", f"already validated at {ref.updated_date}")
    try:
        report = validate_one(ref.job_id)
    except Exception as exc:  # one job's failure must not stop the others
        return JobOutcome(ref.job_id, "failed", f"could not validate: {type(exc).__name__}: {exc}")
    try:
        fired, created = record_and_queue(store, report, rules, notifier.targets)
    except Exception as exc:  # a broken store, a report without its job state...: this job only
        return JobOutcome(ref.job_id, "failed", f"could not store: {type(exc).__name__}: {exc}")
    names = [a["rule"] for a in fired]
    detail = "stored" if created else "this job state was stored before; alerts not re-queued"
    return JobOutcome(ref.job_id, "alert" if fired else "ok", detail, names)


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
) -> BatchResult:
    """Validate each job under its own file lock and deliver the outbox; see the module doc."""
    notifier = notifier or Notifier(rules.webhooks)
    lock_root = Path(lock_dir) if lock_dir else default_lock_dir()
    lock_root.mkdir(parents=True, exist_ok=True)
    delivery = DeliveryResult()

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
        delivery.sent += step.sent
        delivery.failed += step.failed
        delivery.errors += step.errors

    try:
        since_at = _resolve_since(since, store)
    except (HistoryError, ValueError) as exc:
        log.error("batch_failed", error=str(exc))
        return BatchResult([JobOutcome(0, "failed", str(exc))], delivery)
    flush()  # what earlier runs could not deliver
    outcomes = []
    for item in jobs:
        ref = item if isinstance(item, JobRef) else JobRef(int(item))
        lock = FileLock(_lock_path(lock_root, ref.host, ref.job_id), timeout=0)
        try:
            with lock:
                outcome = _validate_and_store(ref, validate_one, store, rules, notifier, since_at, force)
        except Timeout:
            outcome = JobOutcome(ref.job_id, "locked", "another run is validating this job")
        except (HistoryError, ValueError) as exc:  # the store, or an unparsable updated_date
            outcome = JobOutcome(ref.job_id, "failed", str(exc))
        outcomes.append(outcome)
        level = "error" if outcome.status == "failed" else "info"
        getattr(log, level)(
            "job_done", job=ref.job_id, status=outcome.status, detail=outcome.detail, alerts=outcome.alerts
        )
        if outcome.alerts:
            flush()
    result = BatchResult(outcomes, delivery)
    log.info(
        "batch_done",
        exit_code=result.exit_code,
        jobs=len(outcomes),
        alerts_sent=delivery.sent,
        alerts_pending=delivery.failed,
    )
    return result
