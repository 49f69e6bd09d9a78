"""Team mode (issue 20): ``queue_failures`` keeps each job the procrastinate queue gave up on, with its
one-line reason, for ``ropewatch queue status``; a later success removes the row. procrastinate's own
tables are its schema, applied by ``ropewatch worker`` (see the docs' team-mode page).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue_failures",
        sa.Column("host", sa.String(512), primary_key=True),
        sa.Column("job_id", sa.Integer, primary_key=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(1024), nullable=False),
        sa.Column("failed_at", sa.String(32), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("queue_failures")
