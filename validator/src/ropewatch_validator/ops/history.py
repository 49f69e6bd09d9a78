"""History of validation runs, baselines and the alert outbox, in SQLite or PostgreSQL.

One SQLAlchemy Core code path serves both: the embedded default is a SQLite file in a data
directory, a ``postgresql://`` URL selects PostgreSQL through psycopg 3. Why a database and not
files: a run (its row, the alerts it fired and their deliveries) is written in one transaction,
so a crash or kill mid-write leaves nothing half-written, and the unique key
(host, job, job_updated_date) makes re-running the same job state a no-op.

Tables (schema managed by Alembic, ``ops/migrations``; :func:`open_store` upgrades older stores)
- ``runs``: one row per (host, job, job_updated_date) with the job's context, the key metrics
  as columns (for trend queries and plots) and the report without its per-object tables as
  zlib-compressed JSON (``report_z``; the full report.json stays where validate-job wrote it).
- ``run_classes``: precision, recall, F1 and support of each attribute class of a run, named by the
  report's vocabulary (``settings.values``).
- ``baselines``: pinned own baselines (a model version -> the runs whose median is its drift baseline);
  without a pin it is the median of the model version's first N earlier runs.
- ``version_references``: pinned reference versions (a model version -> the version it is compared
  with); without a pin it is the previous version by first-seen order (``ops.baselines``).
- ``backtest_pairs``: registered paired backtests (``ropewatch baseline add-backtest``): per pair of
  versions, McNemar's p and the paired differences with their intervals.
- ``alerts``: each alert fired, unique by its idempotency key (host, job, job state, rule).
- ``deliveries``: one row per (alert, webhook): ``pending`` rows are the outbox, ``sent`` rows
  the ledger that keeps an alert from being sent twice.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from ropewatch_core.errors import InputError, ServiceError
from ropewatch_core.jsonio import utc_iso
from ropewatch_validator.ops.alerts.model import Alert
from ropewatch_validator.render.model import Report

ENV_DB = "ROPEWATCH_DB"
MIGRATIONS = Path(__file__).with_name("migrations")
DEFAULT_BASELINE_RUNS = 5
UNKNOWN_MODEL = "unknown"

CLASS_METRICS = ("precision", "recall", "f1", "support")

metadata = sa.MetaData()

# The schema the migrations in ops/migrations build (a test compares them); change both together.
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(512), nullable=False),
    sa.Column("job_id", sa.Integer, nullable=False),
    sa.Column("job_updated_date", sa.String(64), nullable=False),
    sa.Column("task_id", sa.Integer),
    sa.Column("project_id", sa.Integer),
    sa.Column("recorded_at", sa.String(32), nullable=False),  # ISO UTC, sorts as text
    sa.Column("generated_at", sa.String(64)),
    sa.Column("model_version", sa.String(256), nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("frames", sa.Integer),
    sa.Column("frames_evaluated", sa.Integer),
    sa.Column("predictions", sa.Integer),
    sa.Column("references", sa.Integer),
    sa.Column("det_precision", sa.Float),
    sa.Column("det_recall", sa.Float),
    sa.Column("det_f1", sa.Float),
    sa.Column("det_ap", sa.Float),
    sa.Column("accuracy", sa.Float),
    sa.Column("macro_f1", sa.Float),
    sa.Column("flips_per_1000", sa.Float),
    sa.Column("schema_version", sa.String(16)),
    sa.Column("unsafe_value", sa.String(256)),
    sa.Column("dangerous_flips", sa.Integer),
    sa.Column("report_z", sa.LargeBinary, nullable=False),
    sa.UniqueConstraint("host", "job_id", "job_updated_date", name="uq_runs_job_state"),
)
sa.Index("ix_runs_model_version", runs.c.model_version, runs.c.recorded_at)
sa.Index("ix_runs_project", runs.c.project_id, runs.c.recorded_at)

run_classes = sa.Table(
    "run_classes",
    metadata,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("class_name", sa.String(256), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),  # the class's place in the report's vocabulary
    sa.Column("precision", sa.Float),
    sa.Column("recall", sa.Float),
    sa.Column("f1", sa.Float),
    sa.Column("support", sa.Integer),
)

baselines = sa.Table(
    "baselines",
    metadata,
    sa.Column("model_version", sa.String(256), primary_key=True),
    sa.Column("run_ids", sa.JSON, nullable=False),
    sa.Column("pinned_at", sa.String(32), nullable=False),
    sa.Column("note", sa.Text),
)

version_references = sa.Table(
    "version_references",
    metadata,
    sa.Column("model_version", sa.String(256), primary_key=True),
    sa.Column("reference_version", sa.String(256), nullable=False),
    sa.Column("pinned_at", sa.String(32), nullable=False),
    sa.Column("note", sa.Text),
)

backtest_pairs = sa.Table(
    "backtest_pairs",
    metadata,
    sa.Column("version_a", sa.String(256), primary_key=True),  # the baseline
    sa.Column("version_b", sa.String(256), primary_key=True),  # the candidate
    sa.Column("added_at", sa.String(32), nullable=False),
    sa.Column("source", sa.Text, nullable=False),  # the backtest file's name and what it scored
    sa.Column("mcnemar_p", sa.Float),
    sa.Column("diffs", sa.JSON, nullable=False),  # metric path -> {estimate, low, high}, b - a
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
    sa.Column("rule", sa.String(256), nullable=False),
    sa.Column("created_at", sa.String(32), nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
)

deliveries = sa.Table(
    "deliveries",
    metadata,
    sa.Column("alert_key", sa.String(64), sa.ForeignKey("alerts.key"), primary_key=True),
    sa.Column("target", sa.String(256), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # pending | sent
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("sent_at", sa.String(32)),
)

# The CVAT loop (issue 19; migration 0004): the review issues ropewatch opened in CVAT, the attribute
# values ``annotate fill`` wrote, the frames ``review sample`` drew, CVAT's webhooks and the jobs they
# queued for validation. Queries: ops/loop_store.py.
review_issues = sa.Table(
    "review_issues",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(512), nullable=False),
    sa.Column("job_id", sa.Integer, nullable=False),
    sa.Column("object_key", sa.String(128), nullable=False),  # shape:<id> | track:<id>@<frame>
    sa.Column("disagreement", sa.String(256), nullable=False),  # flip_wrong_to_correct, missed_wrong...
    sa.Column("issue_id", sa.Integer, nullable=False),  # CVAT's issue id
    sa.Column("frame", sa.Integer, nullable=False),
    sa.Column("opened_at", sa.String(32), nullable=False),
    sa.Column("resolved_at", sa.String(32)),  # null while the disagreement stands
    sa.UniqueConstraint("host", "issue_id", name="uq_review_issues_issue"),
)
sa.Index("ix_review_issues_job", review_issues.c.host, review_issues.c.job_id)

filled_shapes = sa.Table(  # ropewatch annotate fill: the value it wrote on each shape
    "filled_shapes",
    metadata,
    sa.Column("host", sa.String(512), primary_key=True),
    sa.Column("job_id", sa.Integer, primary_key=True),
    sa.Column("shape_id", sa.Integer, primary_key=True),
    sa.Column("frame", sa.Integer, nullable=False),
    sa.Column("value", sa.String(256), nullable=False),
    sa.Column("model_version", sa.String(256)),
    sa.Column("request_id", sa.String(128)),
    sa.Column("filled_at", sa.String(32), nullable=False),
)

sample_frames = sa.Table(  # ropewatch review sample: the frames of a task's GT job and their design
    "sample_frames",
    metadata,
    sa.Column("host", sa.String(512), primary_key=True),
    sa.Column("task_id", sa.Integer, primary_key=True),
    sa.Column("frame", sa.Integer, primary_key=True),
    sa.Column("stratum", sa.String(32), nullable=False),
    sa.Column("stratum_frames", sa.Integer, nullable=False),  # N_h: the stratum's frames in the task
    sa.Column("stratum_drawn", sa.Integer, nullable=False),  # n_h: drawn from it
    sa.Column("inclusion_prob", sa.Float, nullable=False),  # n_h / N_h
    sa.Column("gt_job_id", sa.Integer, nullable=False),
    sa.Column("drawn_at", sa.String(32), nullable=False),
)

webhook_events = sa.Table(  # ropewatch listen: each CVAT webhook body seen (redeliveries are the same body)
    "webhook_events",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),  # sha256 of the exact body
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("received_at", sa.String(32), nullable=False),
)

validation_queue = sa.Table(  # jobs CVAT said are done, waiting for `ropewatch webhook drain`
    "validation_queue",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("host", sa.String(512), nullable=False),
    sa.Column("job_id", sa.Integer, nullable=False),
    sa.Column("reason", sa.String(64), nullable=False),  # state:completed | stage:acceptance
    sa.Column("queued_at", sa.String(32), nullable=False),
    sa.Column("done_at", sa.String(32)),
    sa.Column("result", sa.String(256)),
)

queue_failures = sa.Table(  # team mode: a job the queue gave up on, with its one-line reason
    "queue_failures",
    metadata,
    sa.Column("host", sa.String(512), primary_key=True),
    sa.Column("job_id", sa.Integer, primary_key=True),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("reason", sa.String(1024), nullable=False),
    sa.Column("failed_at", sa.String(32), nullable=False),
)


class DeliveryStatus(str, Enum):
    """A delivery row: still in the outbox, or in the ledger of sent alerts."""

    PENDING = "pending"
    SENT = "sent"


class HistoryError(ServiceError):
    """The history store cannot be used; the message says which store and what to do."""


@dataclass(frozen=True)
class JobState:
    """The idempotency key of a run: one CVAT job in one annotation state."""

    host: str
    job_id: int
    job_updated_date: str


@dataclass(frozen=True)
class Delivery:
    alert_key: str
    target: str
    attempts: int
    payload: dict[str, Any]


def utc_now() -> str:
    return utc_iso()


def run_metrics(report: Report) -> dict[str, Any]:
    """The metric columns of ``runs`` from the report's typed fields."""
    det, att, flips = report.detection, report.attribute, report.dangerous_flips()
    return {
        "det_precision": det.precision,
        "det_recall": det.recall,
        "det_f1": det.f1,
        "det_ap": det.ap,
        "accuracy": att.accuracy,
        "macro_f1": att.macro_f1,
        "flips_per_1000": report.per_1000(flips),
        "dangerous_flips": flips,
        "unsafe_value": report.settings.unsafe,
    }


def compress(report: Report) -> bytes:
    return zlib.compress(json.dumps(report.summary(), separators=(",", ":")).encode())


def decompress(blob: bytes) -> Report:
    return Report.model_validate_json(zlib.decompress(blob))


def report_blocks(blob: bytes, *names: str) -> dict[str, Any]:
    """Top-level blocks of a stored report as plain JSON values, the rest not validated: for readers of
    a few blocks of many reports (the dashboard's label table reads two of 200, 8x faster)."""
    data = json.loads(zlib.decompress(blob))
    return {name: data.get(name) for name in names}


def parse_time(value: str | datetime) -> datetime:
    """CVAT's ISO timestamps (``...Z``, ``+00:00``) and naive ones (taken as UTC), as aware datetimes."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


STATE_SEP = "~"  # job_updated_date~<digest of deleted frames>: a job state no date tells apart


def make_state(host: str, job_id: int, updated: str | datetime, frames: str = "") -> JobState:
    """One spelling per job state (trailing '/', 'Z' vs '+00:00', str vs datetime), so a job listed
    by cvat-sdk and the same job in a stored report compare equal. ``frames`` is the digest of the
    job's deleted frames (``cvat.parse.deleted_digest``; CVAT moves no date when frames are deleted), kept
    after ``~`` so a job without deleted frames has the key it always had."""
    stamp = utc_iso(parse_time(updated))
    return JobState(str(host).rstrip("/"), int(job_id), f"{stamp}{STATE_SEP}{frames}" if frames else stamp)


def updated_part(key: str) -> str:
    """The ``updated_date`` of a stored job-state key."""
    return key.split(STATE_SEP, 1)[0]


def job_state(report: Report) -> JobState:
    source = report.source
    if source.job_updated_date in (None, "") or not source.host:
        missing = [k for k in ("host", "job_updated_date") if getattr(source, k) in (None, "")]
        raise InputError(f"report.json source lacks {', '.join(missing)}: cannot key the run")
    try:
        return make_state(source.host, source.job, source.job_updated_date, source.job_state or "")
    except (TypeError, ValueError) as exc:
        raise InputError(f"report.json source has an unusable job or job_updated_date: {exc}") from None


def model_version_of(report: Report) -> str:
    return report.model_version or UNKNOWN_MODEL


def default_db_url() -> str:
    """ROPEWATCH_DB, else a SQLite file in the XDG data directory."""
    if os.environ.get(ENV_DB):
        return os.environ[ENV_DB]
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return str(base / "ropewatch" / "history.sqlite")


def normalize_url(db: str) -> str:
    """A plain path means SQLite; postgres URLs use psycopg 3 (the driver we ship). Pure: the folder
    of a new SQLite file is made by :func:`open_store`, the writer, not by readers of the URL."""
    if "://" not in db:
        return f"sqlite:///{Path(db).expanduser()}"
    for prefix in ("postgres://", "postgresql://"):
        if db.startswith(prefix):
            return "postgresql+psycopg://" + db[len(prefix) :]
    return db


def _row_for(report: Report, state: JobState) -> dict[str, Any]:
    counts = report.counts
    return {
        "host": state.host,
        "job_id": state.job_id,
        "job_updated_date": state.job_updated_date,
        "task_id": report.source.task,
        "project_id": report.source.project,
        "recorded_at": utc_now(),
        "generated_at": report.generated_at,
        "model_version": model_version_of(report),
        "settings": report.settings.model_dump(mode="json"),
        "frames": counts.frames,
        "frames_evaluated": counts.frames_evaluated,
        "predictions": counts.predictions,
        "references": counts.references,
        "schema_version": report.schema_version,
        "report_z": compress(report),
        **run_metrics(report),
    }


def _class_rows(report: Report, run_id: int) -> list[dict[str, Any]]:
    return [
        {"run_id": run_id, "class_name": name, "position": i, **m.model_dump(include=set(CLASS_METRICS))}
        for i, (name, m) in enumerate(report.attribute.per_class.items())
    ]


class HistoryStore:
    """The history database. Open with :func:`open_store`."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.label = engine.url.render_as_string(hide_password=True)

    @contextmanager
    def _connect(self, write: bool) -> Iterator[Connection]:
        """A write transaction or a read connection, with DB errors turned into HistoryError."""
        try:
            with self.engine.connect() as conn:
                if not write:
                    yield conn
                    return
                with conn.execution_options(ropewatch_write=True).begin():
                    yield conn
        except sa_exc.IntegrityError:
            raise
        except sa_exc.DBAPIError as exc:
            raise HistoryError(_explain(self.label, exc)) from None

    def create_schema(self) -> None:
        """Create or upgrade the schema to this version's (Alembic), in one transaction. Idempotent.
        Two first runs racing: SQLite serialises them (BEGIN IMMEDIATE); on PostgreSQL the loser's
        transaction fails whole and its retry finds the tables."""
        for attempt in (1, 2):
            try:
                with self._connect(write=True) as conn:
                    upgrade(conn, self.label)
                return
            except (HistoryError, sa_exc.IntegrityError):
                if attempt == 2:
                    raise

    # -- runs -------------------------------------------------------------------------------
    def has_run(self, state: JobState) -> bool:
        with self._connect(write=False) as conn:
            return self._run_id(conn, state) is not None

    def run_id(self, state: JobState) -> int | None:
        """The id of the stored run of ``state`` (None: not stored)."""
        with self._connect(write=False) as conn:
            return self._run_id(conn, state)

    @staticmethod
    def _run_id(conn: Connection, state: JobState) -> int | None:
        return conn.execute(
            sa.select(runs.c.id).where(
                runs.c.host == state.host,
                runs.c.job_id == state.job_id,
                runs.c.job_updated_date == state.job_updated_date,
            )
        ).scalar_one_or_none()

    def record_run(
        self,
        report: Report,
        fired: Sequence[Alert] = (),
        targets: Sequence[str] = (),
    ) -> tuple[int, bool]:
        """Store a run with the alerts it fired, queued for every target, in one transaction.

        Returns (run id, created). A job state already stored is not stored again (created False) and
        its alerts are not queued again; an alert it did not fire before (a rule added since, checked
        with ``--force``) is queued with that run. Each alert is stored as its JSON payload.
        """
        state = job_state(report)
        try:
            with self._connect(write=True) as conn:
                existing = self._run_id(conn, state)
                if existing is None:
                    run_id = conn.execute(
                        sa.insert(runs).values(_row_for(report, state)).returning(runs.c.id)
                    ).scalar_one()
                    conn.execute(sa.insert(run_classes), _class_rows(report, run_id))
                else:
                    run_id = existing
                    known = {
                        k
                        for (k,) in conn.execute(
                            sa.select(alerts.c.key).where(alerts.c.key.in_([a.key for a in fired]))
                        )
                    }
                    fired = [a for a in fired if a.key not in known]
                now = utc_now()
                for alert in fired:
                    conn.execute(
                        sa.insert(alerts).values(
                            key=alert.key,
                            run_id=run_id,
                            rule=alert.rule,
                            created_at=now,
                            payload=alert.model_dump(mode="json"),
                        )
                    )
                    for target in targets:
                        conn.execute(
                            sa.insert(deliveries).values(
                                alert_key=alert.key,
                                target=target,
                                status=DeliveryStatus.PENDING.value,
                                attempts=0,
                            )
                        )
                return int(run_id), existing is None
        except sa_exc.IntegrityError:
            # Another process stored the same job state (or alert) first: that run is the one.
            with self._connect(write=False) as conn:
                existing = self._run_id(conn, state)
            if existing is None:
                raise
            return existing, False

    def trend(
        self, job: int | None = None, project: int | None = None, model_version: str | None = None
    ) -> list[dict[str, Any]]:
        """Runs (without the report) oldest first, filtered by job, project or model version; each
        with ``classes`` = {class: {precision, recall, f1, support}} in the report's class order."""
        cols = [c for c in runs.c if c.name not in ("report_z", "settings")]
        query = sa.select(*cols).order_by(runs.c.recorded_at, runs.c.id)
        if job is not None:
            query = query.where(runs.c.job_id == job)
        if project is not None:
            query = query.where(runs.c.project_id == project)
        if model_version is not None:
            query = query.where(runs.c.model_version == model_version)
        with self._connect(write=False) as conn:
            rows = [dict(r._mapping, classes={}) for r in conn.execute(query)]
            by_id = {r["id"]: r for r in rows}
            for ids in _chunks(list(by_id)):
                for c in conn.execute(
                    sa.select(run_classes)
                    .where(run_classes.c.run_id.in_(ids))
                    .order_by(run_classes.c.run_id, run_classes.c.position)
                ):
                    by_id[c.run_id]["classes"][c.class_name] = {k: getattr(c, k) for k in CLASS_METRICS}
        return rows

    def reports(self, run_ids: Sequence[int]) -> list[Report]:
        """The stored reports (per-object tables empty: see ``Report.summary``), by run id."""
        with self._connect(write=False) as conn:
            rows = conn.execute(
                sa.select(runs.c.report_z).where(runs.c.id.in_(list(run_ids))).order_by(runs.c.id)
            )
            return [decompress(r.report_z) for r in rows]

    def last_job_state(self, host: str, job_id: int) -> str | None:
        """The job state key (``updated_date``, then ``~digest`` of deleted frames when there are any)
        of the newest stored run of one job on one host (None: never stored)."""
        query = (
            sa.select(runs.c.job_updated_date)
            .where(runs.c.host == str(host).rstrip("/"), runs.c.job_id == int(job_id))
            .order_by(runs.c.id.desc())
            .limit(1)
        )
        with self._connect(write=False) as conn:
            return conn.execute(query).scalar_one_or_none()

    # -- baselines --------------------------------------------------------------------------
    def baseline_runs(
        self, model_version: str, first_n: int = DEFAULT_BASELINE_RUNS
    ) -> tuple[list[int], bool]:
        """Run ids forming the baseline of a model version and whether they were pinned."""
        with self._connect(write=False) as conn:
            pinned = conn.execute(
                sa.select(baselines.c.run_ids).where(baselines.c.model_version == model_version)
            ).scalar_one_or_none()
            if pinned is not None:
                return [int(i) for i in pinned], True
            first = conn.execute(
                sa.select(runs.c.id)
                .where(runs.c.model_version == model_version)
                .order_by(runs.c.recorded_at, runs.c.id)
                .limit(first_n)
            )
            return [int(i) for i in first.scalars()], False

    def pin_baseline(self, model_version: str, run_ids: Sequence[int], note: str | None = None) -> None:
        with self._connect(write=True) as conn:
            found = set(
                conn.execute(
                    sa.select(runs.c.id).where(
                        runs.c.id.in_(list(run_ids)), runs.c.model_version == model_version
                    )
                ).scalars()
            )
            unknown = sorted(set(run_ids) - found)
            if unknown or not run_ids:
                raise InputError(
                    f"runs {unknown or '(none given)'} are not runs of model version {model_version!r}"
                )
            conn.execute(sa.delete(baselines).where(baselines.c.model_version == model_version))
            conn.execute(
                sa.insert(baselines).values(
                    model_version=model_version, run_ids=sorted(found), pinned_at=utc_now(), note=note
                )
            )

    def unpin_baseline(self, model_version: str) -> bool:
        with self._connect(write=True) as conn:
            return (
                conn.execute(sa.delete(baselines).where(baselines.c.model_version == model_version)).rowcount
                > 0
            )

    # -- reference versions and backtests -------------------------------------------------------
    def versions_first_seen(self) -> list[str]:
        """Model versions in the order their first run was stored."""
        query = (
            sa.select(runs.c.model_version)
            .group_by(runs.c.model_version)
            .order_by(sa.func.min(runs.c.recorded_at), sa.func.min(runs.c.id))
        )
        with self._connect(write=False) as conn:
            return [r[0] for r in conn.execute(query)]

    def pinned_reference(self, model_version: str) -> str | None:
        with self._connect(write=False) as conn:
            return conn.execute(
                sa.select(version_references.c.reference_version).where(
                    version_references.c.model_version == model_version
                )
            ).scalar_one_or_none()

    def pin_reference(self, model_version: str, reference: str, note: str | None = None) -> None:
        """Compare ``model_version`` with ``reference`` instead of the previous version."""
        if reference == model_version:
            raise ValueError(f"a version cannot be its own reference ({model_version!r})")
        known = set(self.versions_first_seen())
        unknown = [v for v in (model_version, reference) if v not in known]
        if unknown:
            raise ValueError(f"no stored runs of model version {unknown[0]!r}")
        with self._connect(write=True) as conn:
            conn.execute(
                sa.delete(version_references).where(version_references.c.model_version == model_version)
            )
            conn.execute(
                sa.insert(version_references).values(
                    model_version=model_version, reference_version=reference, pinned_at=utc_now(), note=note
                )
            )

    def unpin_reference(self, model_version: str) -> bool:
        with self._connect(write=True) as conn:
            query = sa.delete(version_references).where(version_references.c.model_version == model_version)
            return conn.execute(query).rowcount > 0

    def add_backtest_pair(
        self, a: str, b: str, source: str, mcnemar_p: float | None, diffs: Mapping[str, Mapping[str, float]]
    ) -> None:
        """Register (or replace) the paired backtest of candidate ``b`` against baseline ``a``."""
        with self._connect(write=True) as conn:
            conn.execute(
                sa.delete(backtest_pairs).where(
                    backtest_pairs.c.version_a == a, backtest_pairs.c.version_b == b
                )
            )
            conn.execute(
                sa.insert(backtest_pairs).values(
                    version_a=a,
                    version_b=b,
                    added_at=utc_now(),
                    source=source,
                    mcnemar_p=mcnemar_p,
                    diffs=dict(diffs),
                )
            )

    def backtest_pair(self, a: str, b: str) -> dict[str, Any] | None:
        """The registered backtest of ``b`` against ``a`` (either order stored), as b − a."""
        with self._connect(write=False) as conn:
            for first, second, sign in ((a, b, 1.0), (b, a, -1.0)):
                row = conn.execute(
                    sa.select(backtest_pairs).where(
                        backtest_pairs.c.version_a == first, backtest_pairs.c.version_b == second
                    )
                ).first()
                if row is not None:
                    diffs = {
                        k: {
                            "estimate": sign * v["estimate"],
                            "low": sign * (v["low"] if sign > 0 else v["high"]),
                            "high": sign * (v["high"] if sign > 0 else v["low"]),
                        }
                        for k, v in row.diffs.items()
                    }
                    return {"source": row.source, "mcnemar_p": row.mcnemar_p, "diffs": diffs}
        return None

    # -- alert outbox -----------------------------------------------------------------------
    def pending(self) -> list[Delivery]:
        query = (
            sa.select(deliveries.c.alert_key, deliveries.c.target, deliveries.c.attempts, alerts.c.payload)
            .join(alerts, alerts.c.key == deliveries.c.alert_key)
            .where(deliveries.c.status == DeliveryStatus.PENDING.value)
            .order_by(alerts.c.created_at, deliveries.c.alert_key, deliveries.c.target)
        )
        with self._connect(write=False) as conn:
            return [Delivery(r.alert_key, r.target, r.attempts, r.payload) for r in conn.execute(query)]

    def mark_delivery(self, alert_key: str, target: str, error: str | None) -> None:
        """Record one delivery attempt: sent when error is None, else still pending with the reason."""
        values: dict[str, Any] = {"attempts": deliveries.c.attempts + 1, "last_error": error}
        if error is None:
            values.update(status=DeliveryStatus.SENT.value, sent_at=utc_now())
        with self._connect(write=True) as conn:
            conn.execute(
                sa.update(deliveries)
                .where(
                    deliveries.c.alert_key == alert_key,
                    deliveries.c.target == target,
                    deliveries.c.status == DeliveryStatus.PENDING.value,
                )
                .values(**values)
            )

    def delivery_status(self) -> list[dict[str, Any]]:
        with self._connect(write=False) as conn:
            rows = conn.execute(sa.select(deliveries).order_by(deliveries.c.alert_key, deliveries.c.target))
            return [dict(r._mapping) for r in rows]

    def close(self) -> None:
        self.engine.dispose()


def _chunks(ids: list[int], size: int = 500) -> Iterator[list[int]]:
    """IN lists of bounded length (SQLite caps bound parameters)."""
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def alembic_config(conn: Connection) -> Any:
    """Alembic's configuration for our migrations, running on ``conn`` (no alembic.ini needed)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = conn
    return config


def upgrade(conn: Connection, label: str) -> None:
    """Bring the store on ``conn`` to this version's schema with Alembic, inside the caller's
    transaction. A new store gets today's tables and is stamped at the head; one of release 0.1
    (tables, no ``alembic_version``) is stamped 0001 and migrated; one newer than this code is
    refused rather than written."""
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = alembic_config(conn)
    script = ScriptDirectory.from_config(config)
    current = MigrationContext.configure(conn).get_current_revision()
    if current == script.get_current_head():
        return
    if current is not None and current not in {s.revision for s in script.walk_revisions()}:
        raise HistoryError(
            f"history store {label}: schema revision {current} is newer than this ropewatch "
            f"(knows up to {script.get_current_head()}); upgrade ropewatch"
        )
    if current is None and not sa.inspect(conn).has_table("runs"):
        metadata.create_all(conn)  # a new store: today's tables at once (Alembic's cookbook), no rewrites
        command.stamp(config, "head")
        return
    if current is None:
        command.stamp(config, "0001")
    command.upgrade(config, "head")


def _explain(label: str, exc: sa_exc.DBAPIError) -> str:
    text = (str(getattr(exc, "orig", None) or exc).strip().splitlines() or [type(exc).__name__])[0]
    low = text.lower()
    if "locked" in low or "busy" in low:
        hint = "another process holds a lock on it; retry when that run has finished"
    elif "not a database" in low or "malformed" in low or "corrupt" in low:
        hint = "the file is damaged: move it aside (or restore a backup) and run again"
    elif "readonly" in low or "read-only" in low:
        hint = "the file or its folder is read-only here: check permissions and the URL's mode"
    else:
        hint = "check the --db URL / ROPEWATCH_DB and that the database is reachable"
    return f"history store {label}: {text} ({hint})"


def sqlite_header_problem(database: str | None) -> str | None:
    """What is wrong with an existing SQLite file's 100-byte header, or None (no file: created).

    SQLite opens a file whose header asks for a newer write format read-only, so a damaged header
    would otherwise surface as "attempt to write a readonly database" (sqlite.org/fileformat.html).
    """
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    try:
        with open(database, "rb") as f:
            head = f.read(100)
    except OSError:
        return None  # SQLite's own error names it
    if not head:
        return None  # an empty file is a new database to SQLite
    page = int.from_bytes(head[16:18], "big") if len(head) == 100 else 0
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return "not an SQLite database (no SQLite header)"
    if not (page == 1 or (512 <= page <= 32768 and page & (page - 1) == 0)):
        return f"damaged SQLite header (page size field {page})"
    if head[18] not in (1, 2) or head[19] not in (1, 2):
        return f"damaged SQLite header (file format versions {head[18]}/{head[19]}, expected 1 or 2)"
    return None


def _sqlite_transactions(engine: Engine) -> None:
    """SQLAlchemy's documented pysqlite recipe: the driver's own BEGIN handling skips DDL (so
    creating the schema would not be atomic) and starts write locks late (two writers could both
    read "not stored yet"). SQLAlchemy emits BEGIN itself instead; writes take the lock up front."""

    @sa.event.listens_for(engine, "connect")
    def _no_driver_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        write = conn.get_execution_options().get("ropewatch_write")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def open_store(db: str | None = None, *, sqlite_timeout_s: float = 30.0) -> HistoryStore:
    """Open (creating the schema if needed) the store at a path or SQLAlchemy URL."""
    url = normalize_url(db or default_db_url())
    connect_args: dict[str, Any] = (
        {"timeout": sqlite_timeout_s} if url.startswith("sqlite") else {"connect_timeout": 10}
    )
    try:
        engine = sa.create_engine(url, connect_args=connect_args)
    except (sa_exc.ArgumentError, ImportError) as exc:
        raise HistoryError(f"history store URL not usable ({type(exc).__name__}: {exc})") from None
    if engine.dialect.name == "sqlite":
        if engine.url.database and engine.url.database != ":memory:":
            Path(engine.url.database).parent.mkdir(parents=True, exist_ok=True)
        problem = sqlite_header_problem(engine.url.database)
        if problem:
            raise HistoryError(
                f"history store {url}: {problem} (the file is damaged: move it aside (or restore a "
                "backup) and run again)"
            )
        _sqlite_transactions(engine)
    store = HistoryStore(engine)
    store.create_schema()
    return store
