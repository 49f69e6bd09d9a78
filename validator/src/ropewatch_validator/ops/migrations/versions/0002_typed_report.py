"""Release 0.2: the class vocabulary is data and per-object rows leave the database.

- ``run_classes``: one row per (run, attribute class) with precision, recall, F1 and support, in place
  of the ``wrong_*``/``correct_*`` columns, so any ``--values`` vocabulary has its history.
- ``runs.dangerous_flips`` (unsafe value predicted as another; ``runs.unsafe_value`` names it) replaces
  ``flips_wrong_to_correct``; ``flips_per_1000`` keeps its meaning for the default vocabulary.
- ``runs.report_z``: the report without its per-object tables, as zlib-compressed JSON, in place of the
  full report.json in ``runs.report`` (the full file stays where ``validate-job --out`` wrote it).

Existing rows are converted from their stored report. The conversion is frozen here on purpose: it
must keep reading 0.1's reports whatever later versions of the report model look like.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

DROPPED = (
    "wrong_precision",
    "wrong_recall",
    "wrong_f1",
    "wrong_support",
    "correct_precision",
    "correct_recall",
    "correct_f1",
    "correct_support",
    "flips_wrong_to_correct",
    "report",
)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """The report without its per-object tables (``Report.summary`` of schema 1.1)."""
    out = dict(report)
    if isinstance(out.get("objects"), dict):
        out["objects"] = {"columns": out["objects"].get("columns", []), "rows": []}
    if isinstance(out.get("trace"), dict):
        empty = {"objects": [], "scores": {"logit": [], "p_correct": [], "y": []}, "mistakes": []}
        out["trace"] = {**out["trace"], **empty}
    return out


def upgrade() -> None:
    op.create_table(
        "run_classes",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), primary_key=True),
        sa.Column("class_name", sa.String(256), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("precision", sa.Float),
        sa.Column("recall", sa.Float),
        sa.Column("f1", sa.Float),
        sa.Column("support", sa.Integer),
    )
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("schema_version", sa.String(16)))
        batch.add_column(sa.Column("unsafe_value", sa.String(256)))
        batch.add_column(sa.Column("dangerous_flips", sa.Integer))
        batch.add_column(sa.Column("report_z", sa.LargeBinary))
    runs = sa.table(
        "runs",
        sa.column("id", sa.Integer),
        sa.column("report", sa.JSON),
        sa.column("schema_version", sa.String),
        sa.column("unsafe_value", sa.String),
        sa.column("dangerous_flips", sa.Integer),
        sa.column("report_z", sa.LargeBinary),
    )
    classes = sa.table(
        "run_classes",
        *(sa.column(c) for c in ("run_id", "class_name", "position", "precision", "recall", "f1", "support")),
    )
    conn = op.get_bind()
    for run_id in conn.execute(sa.select(runs.c.id).order_by(runs.c.id)).scalars().all():
        report = conn.execute(sa.select(runs.c.report).where(runs.c.id == run_id)).scalar_one()
        values = (report.get("settings") or {}).get("values") or ["wrong", "correct"]
        errors = report.get("errors") or {}
        flips = sum(int(errors.get(f"flip_{values[0]}_to_{v}") or 0) for v in values[1:])
        body = json.dumps(_summary(report), separators=(",", ":")).encode()
        conn.execute(
            sa.update(runs)
            .where(runs.c.id == run_id)
            .values(
                schema_version=report.get("schema_version"),
                unsafe_value=values[0],
                dangerous_flips=flips,
                report_z=zlib.compress(body),
            )
        )
        per_class = (report.get("attribute") or {}).get("per_class") or {}
        rows = [
            {
                "run_id": run_id,
                "class_name": name,
                "position": i,
                **{k: m.get(k) for k in ("precision", "recall", "f1", "support")},
            }
            for i, (name, m) in enumerate(per_class.items())
        ]
        if rows:
            conn.execute(sa.insert(classes), rows)
    with op.batch_alter_table("runs") as batch:
        for name in DROPPED:
            batch.drop_column(name)
        batch.alter_column("report_z", existing_type=sa.LargeBinary, nullable=False)


def downgrade() -> None:
    raise NotImplementedError("per-object rows are not kept since 0002: restore a backup of the 0.1 store")
