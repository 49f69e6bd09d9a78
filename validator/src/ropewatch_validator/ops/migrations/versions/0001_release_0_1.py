"""The history schema of release 0.1: per-class metric columns for ``wrong``/``correct`` and the full
report.json in ``runs.report``. Stores made by 0.1 have these tables and no ``alembic_version``; they
are stamped at this revision and upgraded from here.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

METRICS_0_1 = (
    "det_precision",
    "det_recall",
    "det_f1",
    "det_ap",
    "wrong_precision",
    "wrong_recall",
    "wrong_f1",
    "wrong_support",
    "correct_precision",
    "correct_recall",
    "correct_f1",
    "correct_support",
    "accuracy",
    "macro_f1",
    "flips_wrong_to_correct",
    "flips_per_1000",
)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(512), nullable=False),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("job_updated_date", sa.String(64), nullable=False),
        sa.Column("task_id", sa.Integer),
        sa.Column("project_id", sa.Integer),
        sa.Column("recorded_at", sa.String(32), nullable=False),
        sa.Column("generated_at", sa.String(64)),
        sa.Column("model_version", sa.String(256), nullable=False),
        sa.Column("settings", sa.JSON, nullable=False),
        sa.Column("frames", sa.Integer),
        sa.Column("frames_evaluated", sa.Integer),
        sa.Column("predictions", sa.Integer),
        sa.Column("references", sa.Integer),
        *(sa.Column(name, sa.Float) for name in METRICS_0_1),
        sa.Column("report", sa.JSON, nullable=False),
        sa.UniqueConstraint("host", "job_id", "job_updated_date", name="uq_runs_job_state"),
    )
    op.create_index("ix_runs_model_version", "runs", ["model_version", "recorded_at"])
    op.create_index("ix_runs_project", "runs", ["project_id", "recorded_at"])
    op.create_table(
        "baselines",
        sa.Column("model_version", sa.String(256), primary_key=True),
        sa.Column("run_ids", sa.JSON, nullable=False),
        sa.Column("pinned_at", sa.String(32), nullable=False),
        sa.Column("note", sa.Text),
    )
    op.create_table(
        "alerts",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), nullable=False),
        sa.Column("rule", sa.String(256), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
    )
    op.create_table(
        "deliveries",
        sa.Column("alert_key", sa.String(64), sa.ForeignKey("alerts.key"), primary_key=True),
        sa.Column("target", sa.String(256), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("sent_at", sa.String(32)),
    )


def downgrade() -> None:
    raise NotImplementedError("0001 is the first schema: restore a backup instead")
