"""Alembic migrations of the history store (``ops.history.upgrade`` runs them; no alembic.ini needed)."""
