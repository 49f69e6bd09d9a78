"""Release 0.3: baselines that mean what they say (issue 17, item 5).

- ``version_references``: a pinned reference version per model version (without one, a version is
  compared with the previous version by first-seen order).
- ``backtest_pairs``: registered paired backtests of two versions (``ropewatch baseline add-backtest``).

Both tables are new; no existing row changes.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "version_references",
        sa.Column("model_version", sa.String(256), primary_key=True),
        sa.Column("reference_version", sa.String(256), nullable=False),
        sa.Column("pinned_at", sa.String(32), nullable=False),
        sa.Column("note", sa.Text),
    )
    op.create_table(
        "backtest_pairs",
        sa.Column("version_a", sa.String(256), primary_key=True),
        sa.Column("version_b", sa.String(256), primary_key=True),
        sa.Column("added_at", sa.String(32), nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("mcnemar_p", sa.Float),
        sa.Column("diffs", sa.JSON, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("backtest_pairs")
    op.drop_table("version_references")
