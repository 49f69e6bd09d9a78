"""The dashboard's handle on the history store: read-only, checked, and never stale.

- **Read-only.** SQLite is opened with ``mode=ro`` (a missing file is an error, never created);
  PostgreSQL sessions run with ``default_transaction_read_only``.
- **A ropewatch store, or nothing.** :meth:`ReadOnlyStore.check` wants every table of the schema
  (``ops.history.metadata``) at this version's Alembic head; ``ropewatch serve`` refuses to start
  otherwise, and ``/healthz`` answers 503 with the same line.
- **Never a deleted or replaced file.** A pooled SQLite connection keeps reading the file it opened,
  even after ``rm`` or a ``mv`` over it (what ``ropewatch demo`` does on a re-run). Every request
  compares the file's identity (device, inode, size, mtime) with the one the pool was opened on;
  on a change the new file is checked and a fresh engine replaces the old one. A file that is gone
  or is no longer a store is a 503, never old data.
- **A hot rollback journal** (a writer killed mid-write after its cache spilled into the file) stops
  every ``mode=ro`` reader with "attempt to write a readonly database": a reader cannot roll it
  back. SQLite rolls a hot journal back on the first read of any connection that may write, so the
  handle opens the file once in ``mode=rw`` (never creating it) for that; this restores the last
  committed state, as the next ``validate-job`` would. Where it may not write (permissions, a
  read-only mount), the pages answer 503 with one line that says what to do.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from ropewatch_core.errors import ServiceError
from ropewatch_validator.ops.history import _explain as explain_error
from ropewatch_validator.ops.history import alembic_config, metadata, normalize_url, sqlite_header_problem

log = logging.getLogger(__name__)

SQLITE_READONLY_ROLLBACK = 776  # sqlite3.h: a hot journal that a read-only connection cannot roll back


class StoreUnavailable(ServiceError):
    """The store cannot answer: missing, replaced by something else, damaged, or not a ropewatch
    store. The dashboard answers 503 with this line; ``ropewatch serve`` refuses to start with it."""


def read_only_engine(db: str) -> Engine:
    """An engine that cannot write: SQLite (a path or a ``sqlite:///`` URL) in ``mode=ro``, the file
    must exist; PostgreSQL sessions with ``default_transaction_read_only``."""
    url = sa.engine.make_url(normalize_url(db)) if "://" in db else None
    if url is None or url.get_backend_name() == "sqlite":
        path = Path(db if url is None else url.database or "").expanduser()
        if not path.is_file():
            raise StoreUnavailable(f"no history store at {path} (run validate-job or ropewatch demo first)")
        return sa.create_engine(f"sqlite:///file:{path.resolve()}?mode=ro&uri=true")
    return sa.create_engine(
        url, connect_args={"connect_timeout": 10, "options": "-c default_transaction_read_only=on"}
    )


@dataclass(frozen=True)
class FileId:
    """What tells one file, and one state of it, from another."""

    device: int
    inode: int
    size: int
    mtime_ns: int


def file_id(path: Path) -> FileId | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return FileId(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def sqlite_path(engine: Engine) -> Path | None:
    """The file of a SQLite engine (``file:PATH?mode=ro`` URLs included); None for other backends."""
    if engine.dialect.name != "sqlite" or not engine.url.database:
        return None
    return Path(engine.url.database.removeprefix("file:"))


def size_problem(path: Path) -> str | None:
    """A SQLite file shorter or longer than its header says (bytes 16-17 page size, 28-31 page count,
    valid while 92-95 equal the change counter at 24-27: sqlite.org/fileformat.html). Checked in
    rollback-journal mode only, the mode the history store uses."""
    try:
        with open(path, "rb") as f:
            head = f.read(100)
        size = path.stat().st_size
    except OSError:
        return None  # SQLite's own error names it
    if len(head) < 100 or head[18] != 1 or head[24:28] != head[92:96]:
        return None  # WAL mode (byte 18 = 2): pages may still be in the -wal file
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    pages = int.from_bytes(head[28:32], "big")
    if pages and size != pages * page:
        return (
            f"truncated (its header counts {page}-byte pages for {pages * page} bytes, the file has "
            f"{size}): the file is damaged, move it aside or restore a backup"
        )
    return None


def schema_problem(conn: Connection) -> str | None:
    """Why the database on ``conn`` is not a ropewatch store this version can read, or None."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    missing = sorted(set(metadata.tables) - set(sa.inspect(conn).get_table_names()))
    if missing:
        return f"not a ropewatch history store (no table {', '.join(missing)})"
    head = ScriptDirectory.from_config(alembic_config(conn)).get_current_head()
    current = MigrationContext.configure(conn).get_current_revision()
    if current != head:
        return (
            f"schema revision {current} is not this ropewatch's ({head}): run `ropewatch history` "
            "or validate-job once with this version to upgrade it (or upgrade ropewatch if it is newer)"
        )
    return None


class ReadOnlyStore:
    """The engine a request should use now (see the module doc). Thread-safe: Starlette runs the
    pages in a thread pool."""

    def __init__(self, engine: Engine):
        self._engine = engine
        self.path = sqlite_path(engine)
        self.label = str(self.path) if self.path else engine.url.render_as_string(hide_password=True)
        self._seen: FileId | None = None  # the first request checks the file
        self._lock = threading.Lock()

    def engine(self) -> Engine:
        """The current engine; a replaced SQLite file gets a fresh (checked) one, a missing file or a
        hot journal that cannot be rolled back raises :class:`StoreUnavailable`."""
        if self.path is None:
            return self._engine
        now = file_id(self.path)
        if now is None:
            raise StoreUnavailable(
                f"history store {self.path} is gone (removed or moved away): put it back or restart "
                "ropewatch serve with --db pointing at the store"
            )
        journal = file_id(Path(f"{self.path}-journal"))
        if now == self._seen and (journal is None or journal.size == 0):
            return self._engine
        with self._lock:
            if now != self._seen:
                fresh = sa.create_engine(self._engine.url)
                self._verify(fresh)
                old, self._engine, self._seen = self._engine, fresh, now
                old.dispose()
                log.info("history store %s changed on disk: reopened", self.path)
            elif journal is not None and journal.size:
                self._verify(self._engine)  # a writer's journal, or a hot one left by a killed writer
        return self._engine

    def _verify(self, engine: Engine) -> None:
        assert self.path is not None
        problem = sqlite_header_problem(str(self.path)) or self._schema(engine)
        if problem:
            raise StoreUnavailable(f"history store {self.label}: {problem}")

    def _schema(self, engine: Engine) -> str | None:
        """:func:`schema_problem` of the file, after rolling back a hot journal; a database error is
        named, as truncation when the file's size says so."""
        assert self.path is not None
        for attempt in (1, 2):
            try:
                with engine.connect() as conn:
                    problem = schema_problem(conn)
                return problem or self._size_problem()
            except sa_exc.DBAPIError as exc:
                hot = getattr(exc.orig, "sqlite_errorcode", None) == SQLITE_READONLY_ROLLBACK
                if not hot or attempt == 2:
                    size = self._size_problem()
                    raise StoreUnavailable(
                        f"history store {self.label}: {size}" if size else explain_error(self.label, exc)
                    ) from None
                self._roll_back_hot_journal()
        return None  # not reached: the second attempt returns or raises

    def _size_problem(self) -> str | None:
        """:func:`size_problem`, except while a writer's journal exists: its pages are on their way."""
        assert self.path is not None
        journal = file_id(Path(f"{self.path}-journal"))
        return size_problem(self.path) if journal is None or journal.size == 0 else None

    def _roll_back_hot_journal(self) -> None:
        """Let SQLite roll back the journal a killed writer left: one read on a ``mode=rw`` connection
        (the file is never created). Refused writes become one line that says what to do."""
        uri = f"file:{self.path}?mode=rw"
        try:
            conn = sqlite3.connect(uri, uri=True, timeout=5)
            try:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchall()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise StoreUnavailable(
                f"history store {self.label}: a writer was killed mid-write and left a hot rollback "
                f"journal ({self.path}-journal) that a read-only reader cannot roll back ({exc}); run "
                f"`ropewatch history --db {self.path}` (or the next validate-job) once as a user who may "
                "write the store, and the dashboard reads it again"
            ) from None
        log.warning("history store %s: rolled back the journal of a killed writer", self.path)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection to the current engine; a database error under a page becomes one line."""
        try:
            with self.engine().connect() as conn:
                yield conn
        except sa_exc.DBAPIError as exc:
            raise StoreUnavailable(explain_error(self.label, exc)) from None

    def check(self) -> None:
        """Raise :class:`StoreUnavailable` unless the store answers and is a ropewatch store."""
        engine = self.engine()
        if self.path is not None:
            self._verify(engine)
            return
        try:
            with engine.connect() as conn:
                problem = schema_problem(conn)
        except sa_exc.DBAPIError as exc:
            raise StoreUnavailable(explain_error(self.label, exc)) from None
        if problem:
            raise StoreUnavailable(f"history store {self.label}: {problem}")
