"""The dashboard's read-only questions to the history store, SQL over the ``runs`` columns and the
per-class rows of ``run_classes`` (never the stored reports, except for one version's label table and
one job's report page). Class names are the stored vocabulary's, not a fixed list.

Aggregates are pooled over runs, not averaged, where the columns allow it: detection recall
= Σ TP / Σ references and precision = Σ TP / Σ predictions (TP = recall × references of each run),
dangerous flips per 1,000 = Σ flips / Σ references × 1,000. Per-class F1 is the mean of the runs' F1.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ropewatch_validator.ops.history import (
    alerts,
    decompress,
    deliveries,
    report_blocks,
    run_classes,
    runs,
)
from ropewatch_validator.ops.history import (
    queue_failures as failed_jobs,
)
from ropewatch_validator.render.model import Attribute, Errors

PAGE = 50


def classes(conn: Connection) -> tuple[str, ...]:
    """The attribute classes the store has runs of, in their vocabulary's order (e.g. wrong, correct)."""
    rows = conn.execute(
        sa.select(run_classes.c.class_name)
        .group_by(run_classes.c.class_name)
        .order_by(sa.func.min(run_classes.c.position), run_classes.c.class_name)
    )
    return tuple(r[0] for r in rows)


def _with_class_f1(
    conn: Connection, rows: list[dict[str, Any]], names: Sequence[str]
) -> list[dict[str, Any]]:
    """``rows`` (each with ``id``) with ``<class>_f1`` keys for every class in ``names`` (None if absent)."""
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        r.update({f"{c}_f1": None for c in names})
    ids = list(by_id)
    for i in range(0, len(ids), 500):  # bounded IN lists (SQLite caps bound parameters)
        for c in conn.execute(
            sa.select(run_classes.c.run_id, run_classes.c.class_name, run_classes.c.f1).where(
                run_classes.c.run_id.in_(ids[i : i + 500])
            )
        ):
            by_id[c.run_id][f"{c.class_name}_f1"] = c.f1
    return rows


def _f(value: Any) -> float | None:
    return None if value is None else float(value)


def _ratio(a: Any, b: Any, scale: float = 1.0) -> float | None:
    return None if a is None or not b else float(a) / float(b) * scale


def _job_key() -> sa.ColumnElement:
    return runs.c.host + "#" + sa.cast(runs.c.job_id, sa.String)


# ------------------------------------------------------------------------------ model versions
def versions(conn: Connection) -> list[dict[str, Any]]:
    """One row per model version: volume, pooled detection figures, mean per-class F1, flips per 1,000,
    first and last run, and the alerts its last run fired (its status)."""
    known = runs.c.det_recall.isnot(None)
    tp = sa.func.sum(sa.case((known, runs.c.det_recall * runs.c.references), else_=None))
    query = sa.select(
        runs.c.model_version,
        sa.func.count().label("runs"),
        sa.func.count(sa.distinct(_job_key())).label("jobs"),
        sa.func.sum(runs.c.frames_evaluated).label("frames"),
        sa.func.sum(runs.c.references).label("persons"),
        sa.func.min(runs.c.recorded_at).label("first_run"),
        sa.func.max(runs.c.recorded_at).label("last_run"),
        tp.label("tp"),
        sa.func.sum(sa.case((known, runs.c.references), else_=None)).label("tp_refs"),
        sa.func.sum(sa.case((runs.c.det_precision.isnot(None), runs.c.predictions), else_=None)).label(
            "preds"
        ),
        sa.func.sum(runs.c.dangerous_flips).label("flips"),
        sa.func.sum(sa.case((runs.c.dangerous_flips.isnot(None), runs.c.references), else_=None)).label(
            "flip_refs"
        ),
        sa.func.max(runs.c.id).label("last_id"),
    ).group_by(runs.c.model_version)
    rows = [dict(r._mapping) for r in conn.execute(query.order_by(sa.desc("last_run")))]
    mean_f1: dict[str, dict[str, float | None]] = {}
    for version, name, f1 in conn.execute(
        sa.select(runs.c.model_version, run_classes.c.class_name, sa.func.avg(run_classes.c.f1))
        .join(run_classes, run_classes.c.run_id == runs.c.id)
        .group_by(runs.c.model_version, run_classes.c.class_name)
    ):
        mean_f1.setdefault(version, {})[name] = _f(f1)
    names = classes(conn)
    fired = _alerts_of_runs(conn, [r["last_id"] for r in rows])
    out = []
    for r in rows:
        out.append(
            {
                "model_version": r["model_version"],
                "runs": r["runs"],
                "jobs": r["jobs"],
                "frames": r["frames"] or 0,
                "persons": r["persons"] or 0,
                "first_run": r["first_run"],
                "last_run": r["last_run"],
                "det_recall": _ratio(r["tp"], r["tp_refs"]),
                "det_precision": _ratio(r["tp"], r["preds"]),
                "f1": {c: mean_f1.get(r["model_version"], {}).get(c) for c in names},
                "flips_per_1000": _ratio(r["flips"], r["flip_refs"], 1000.0),
                "alerts": fired.get(r["last_id"], []),
                "last_id": r["last_id"],
            }
        )
    return out


def version_metrics(names: Sequence[str]) -> list[str]:
    """The history metrics of the versions table's columns, compared with each version's reference."""
    return ["detection.recall", "detection.precision", *(f"attribute.per_class.{c}.f1" for c in names)] + [
        "dangerous_flips_per_1000"
    ]


def run_alerts(conn: Connection, run_id: int) -> list[str]:
    """The alert rules one run fired (its report page names them)."""
    return _alerts_of_runs(conn, [run_id]).get(run_id, [])


def _alerts_of_runs(conn: Connection, run_ids: Sequence[int]) -> dict[int, list[str]]:
    if not run_ids:
        return {}
    rows = conn.execute(
        sa.select(alerts.c.run_id, alerts.c.rule)
        .where(alerts.c.run_id.in_(list(run_ids)))
        .order_by(alerts.c.rule)
    )
    out: dict[int, list[str]] = {}
    for r in rows:
        out.setdefault(r.run_id, []).append(r.rule)
    return out


# ---------------------------------------------------------------------------------------- trend
@dataclass(frozen=True)
class Trend:
    runs: list[dict[str, Any]]  # oldest first
    baseline: dict[str, tuple[float, float, float] | None]  # metric column -> (min, median, max)
    baseline_runs: list[int]


def trend(conn: Connection, version: str, n: int, baseline_ids: Sequence[int]) -> Trend:
    """The last ``n`` runs of ``version`` and the range of its baseline runs, per charted metric
    (``<class>_f1`` of every stored class, ``flips_per_1000``)."""
    names = classes(conn)
    cols = [runs.c.id, runs.c.job_id, runs.c.task_id, runs.c.host, runs.c.recorded_at, runs.c.flips_per_1000]
    last = conn.execute(
        sa.select(*cols)
        .where(runs.c.model_version == version)
        .order_by(runs.c.recorded_at.desc(), runs.c.id.desc())
        .limit(n)
    )
    rows = _with_class_f1(conn, [dict(r._mapping) for r in last][::-1], names)
    base_rows = []
    if baseline_ids:
        base = conn.execute(sa.select(*cols).where(runs.c.id.in_(list(baseline_ids))))
        base_rows = _with_class_f1(conn, [dict(r._mapping) for r in base], names)
    band: dict[str, tuple[float, float, float] | None] = {}
    for c in (*(f"{name}_f1" for name in names), "flips_per_1000"):
        values = [float(r[c]) for r in base_rows if r[c] is not None]
        band[c] = (min(values), statistics.median(values), max(values)) if values else None
    return Trend(rows, band, list(baseline_ids))


# ------------------------------------------------------------------------------- one version
def version_labels(conn: Connection, version: str, limit: int) -> list[tuple[Attribute, Errors]]:
    """The attribute and error blocks of the version's last ``limit`` runs (for its label table), from
    the stored reports (which hold no per-object rows)."""
    rows = conn.execute(
        sa.select(runs.c.report_z)
        .where(runs.c.model_version == version)
        .order_by(runs.c.recorded_at.desc(), runs.c.id.desc())
        .limit(limit)
    )
    blocks = [report_blocks(r.report_z, "attribute", "errors") for r in rows]
    return [(Attribute.model_validate(b["attribute"]), Errors.model_validate(b["errors"])) for b in blocks]


def label_table(blocks: Sequence[tuple[Attribute, Errors]]) -> dict[str, Any]:
    """Per reference label: references, detected (matched a prediction), missed, detection rate, kept
    (predicted with the same value), flipped (predicted with another), and the predictions with this
    value that matched nothing; plus the error counts by type, summed over the runs' ``blocks``."""
    labels: dict[str, dict[str, int]] = {}
    errors: dict[str, int] = {}
    for att, errs in blocks:
        for i, v in enumerate(att.labels):
            row = labels.setdefault(v, dict.fromkeys(("detected", "missed", "kept", "flipped", "extra"), 0))
            row["detected"] += att.row_totals[i]
            row["missed"] += att.missed.get(v, 0)
            row["kept"] += att.confusion_matrix[i][i]
            row["flipped"] += att.row_totals[i] - att.confusion_matrix[i][i]
            row["extra"] += att.extra.get(v, 0)
        for k, n in errs.counts().items():
            errors[k] = errors.get(k, 0) + n
    out = []
    for v, row in labels.items():
        refs = row["detected"] + row["missed"]
        out.append(
            {
                "label": v,
                "references": refs,
                **row,
                "detection_rate": _ratio(row["detected"], refs),
                "attribute_recall": _ratio(row["kept"], row["detected"]),
            }
        )
    return {"labels": out, "errors": errors, "runs": len(blocks)}


# ------------------------------------------------------------------------------------- jobs
@dataclass(frozen=True)
class Filters:
    project: int | None = None
    task: int | None = None
    version: str | None = None
    page: int = 1

    def where(self) -> list[sa.ColumnElement]:
        out = []
        if self.project is not None:
            out.append(runs.c.project_id == self.project)
        if self.task is not None:
            out.append(runs.c.task_id == self.task)
        if self.version:
            out.append(runs.c.model_version == self.version)
        return out


JOB_COLUMNS = (
    "id",
    "host",
    "job_id",
    "task_id",
    "project_id",
    "model_version",
    "recorded_at",
    "frames_evaluated",
    "references",
    "det_recall",
    "det_precision",
    "flips_per_1000",
)


def jobs(conn: Connection, filters: Filters, per_page: int = PAGE) -> tuple[list[dict[str, Any]], int]:
    """One page of runs (newest first) matching ``filters``, with the alerts each fired; and the total."""
    where = filters.where()
    total = conn.execute(sa.select(sa.func.count()).select_from(runs).where(*where)).scalar_one()
    page = conn.execute(
        sa.select(*(runs.c[c] for c in JOB_COLUMNS))
        .where(*where)
        .order_by(runs.c.recorded_at.desc(), runs.c.id.desc())
        .limit(per_page)
        .offset((max(filters.page, 1) - 1) * per_page)
    )
    rows = _with_class_f1(conn, [dict(r._mapping) for r in page], classes(conn))
    fired = _alerts_of_runs(conn, [r["id"] for r in rows])
    for r in rows:
        r["alerts"] = fired.get(r["id"], [])
    return rows, int(total)


def queue_failures(conn: Connection) -> list[dict[str, Any]]:
    """The jobs team mode's queue gave up on (``ropewatch worker``), newest first, with their one-line
    reason: a job that is never validated must show on the jobs page, not only in `queue status`."""
    t = failed_jobs
    rows = conn.execute(sa.select(t).order_by(t.c.failed_at.desc(), t.c.job_id))
    return [dict(r._mapping) for r in rows]


def choices(conn: Connection) -> dict[str, list[Any]]:
    """The values the job list's filters offer."""

    def distinct(col: sa.Column) -> list[Any]:
        rows = conn.execute(sa.select(col).where(col.isnot(None)).distinct().order_by(col))
        return [r[0] for r in rows]

    return {
        "projects": distinct(runs.c.project_id),
        "tasks": distinct(runs.c.task_id),
        "versions": distinct(runs.c.model_version),
    }


def run_row(conn: Connection, run_id: int) -> dict[str, Any] | None:
    """The run's columns and its stored ``report`` (per-object rows are not kept in the store)."""
    row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()
    if row is None:
        return None
    out = dict(row._mapping)
    out["report"] = decompress(out.pop("report_z"))
    return out


# ------------------------------------------------------------------------------------ alerts
def delivery_state(status: str, attempts: int, last_error: str | None) -> str:
    """sent; pending (not tried yet); failed (tried, still in the outbox: the next run retries it)."""
    if status == "sent":
        return "sent"
    return "failed" if attempts > 0 and last_error else "pending"


def alert_list(conn: Connection, limit: int = 200) -> list[dict[str, Any]]:
    """The latest alerts with their run and the delivery state per webhook target."""
    rows = conn.execute(
        sa.select(
            alerts.c.key,
            alerts.c.rule,
            alerts.c.created_at,
            alerts.c.payload,
            runs.c.id.label("run_id"),
            runs.c.host,
            runs.c.job_id,
            runs.c.task_id,
            runs.c.project_id,
            runs.c.model_version,
        )
        .join(runs, runs.c.id == alerts.c.run_id)
        .order_by(alerts.c.created_at.desc(), alerts.c.key)
        .limit(limit)
    )
    out = [dict(r._mapping) for r in rows]
    keys = [a["key"] for a in out]
    per_alert: dict[str, list[dict[str, Any]]] = {}
    if keys:
        for d in conn.execute(
            sa.select(deliveries).where(deliveries.c.alert_key.in_(keys)).order_by(deliveries.c.target)
        ):
            per_alert.setdefault(d.alert_key, []).append(
                {
                    "target": d.target,
                    "state": delivery_state(d.status, d.attempts, d.last_error),
                    "attempts": d.attempts,
                    "last_error": d.last_error,
                    "sent_at": d.sent_at,
                }
            )
    for a in out:
        payload = a.pop("payload") or {}
        a["message"] = payload.get("message")
        a["deliveries"] = per_alert.get(a["key"], [])
    return out
