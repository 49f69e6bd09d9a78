"""The CVAT loop (issue 19): ``review_issues`` remembers each review issue ropewatch opened in CVAT,
for which (host, job, object, disagreement), and whether it resolved it since; ``filled_shapes`` the
attribute value ``ropewatch annotate fill`` wrote on each shape (what makes a re-run skip it);
``sample_frames`` the frames ``ropewatch review sample`` drew for a task's GT job, with their stratum
and inclusion probability (what ``review estimate`` weights by); ``webhook_events`` each CVAT webhook
body ``ropewatch listen`` accepted (redeliveries dedupe on it) and ``validation_queue`` the jobs they
queued for validation.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review_issues",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(512), nullable=False),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("object_key", sa.String(128), nullable=False),
        sa.Column("disagreement", sa.String(256), nullable=False),
        sa.Column("issue_id", sa.Integer, nullable=False),
        sa.Column("frame", sa.Integer, nullable=False),
        sa.Column("opened_at", sa.String(32), nullable=False),
        sa.Column("resolved_at", sa.String(32)),
        sa.UniqueConstraint("host", "issue_id", name="uq_review_issues_issue"),
    )
    op.create_index("ix_review_issues_job", "review_issues", ["host", "job_id"])
    op.create_table(
        "filled_shapes",
        sa.Column("host", sa.String(512), primary_key=True),
        sa.Column("job_id", sa.Integer, primary_key=True),
        sa.Column("shape_id", sa.Integer, primary_key=True),
        sa.Column("frame", sa.Integer, nullable=False),
        sa.Column("value", sa.String(256), nullable=False),
        sa.Column("model_version", sa.String(256)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("filled_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "sample_frames",
        sa.Column("host", sa.String(512), primary_key=True),
        sa.Column("task_id", sa.Integer, primary_key=True),
        sa.Column("frame", sa.Integer, primary_key=True),
        sa.Column("stratum", sa.String(32), nullable=False),
        sa.Column("stratum_frames", sa.Integer, nullable=False),
        sa.Column("stratum_drawn", sa.Integer, nullable=False),
        sa.Column("inclusion_prob", sa.Float, nullable=False),
        sa.Column("gt_job_id", sa.Integer, nullable=False),
        sa.Column("drawn_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "webhook_events",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("received_at", sa.String(32), nullable=False),
    )
    op.create_table(
        "validation_queue",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("host", sa.String(512), nullable=False),
        sa.Column("job_id", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("queued_at", sa.String(32), nullable=False),
        sa.Column("done_at", sa.String(32)),
        sa.Column("result", sa.String(256)),
    )


def downgrade() -> None:
    op.drop_table("validation_queue")
    op.drop_table("webhook_events")
    op.drop_table("sample_frames")
    op.drop_table("filled_shapes")
    op.drop_index("ix_review_issues_job", table_name="review_issues")
    op.drop_table("review_issues")
