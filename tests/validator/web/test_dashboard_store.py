"""The dashboard's store handling (issue 18, items 7, 8, 10, 11): a replaced, removed, damaged or
foreign store is never served as if it were the store, `/healthz` checks it, a hot rollback journal
is rolled back, huge ids are a 404, and the token file is read as documented. Every failure is one
line with the right status or exit code."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

from ropewatch_validator.cli.main import main
from ropewatch_validator.cli.serve import read_token
from ropewatch_validator.ops.history import metadata, open_store
from ropewatch_validator.web.app import create_app, read_only_engine
from ropewatch_validator.web.store import ReadOnlyStore, StoreUnavailable
from support.output import stderr_line
from support.webserver import serving


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _single(body):
    """A response body that is one line (no traceback, no HTML page)."""
    assert len(body.strip().splitlines()) == 1 and "Traceback" not in body, body
    return body.strip()


def _store(path, make_report, version, jobs):
    store = open_store(str(path))
    for job in jobs:
        store.record_run(make_report(job=job, model_version=version))
    store.close()
    return path


@pytest.fixture
def served(tmp_path, make_report):
    db = _store(tmp_path / "history.sqlite", make_report, "rope-old", (1, 2, 3))
    with serving(create_app(read_only_engine(str(db)))) as url:
        yield db, url


def test_a_store_replaced_by_mv_is_read_from_the_new_file(served, tmp_path, make_report):
    """`ropewatch demo` re-run: a new store is moved over the old one while the dashboard runs."""
    db, url = served
    assert "rope-old" in _get(url + "/")[1]  # the pool now holds connections to the old file
    new = _store(tmp_path / "new.sqlite", make_report, "rope-new", (7,))
    os.replace(new, db)
    pages = [_get(url + "/") for _ in range(40)]
    assert all(status == 200 and "rope-new" in body and "rope-old" not in body for status, body in pages)
    assert _get(url + "/healthz") == (200, "ok")


def test_a_removed_store_is_a_503_never_the_deleted_data(served):
    db, url = served
    assert _get(url + "/jobs")[0] == 200
    db.unlink()
    for path in ("/", "/jobs", "/runs/1", "/healthz"):
        status, body = _get(url + path)
        assert status == 503 and "rope-old" not in body
        assert _single(body) == (
            f"history store {db} is gone (removed or moved away): put it back or "
            "restart ropewatch serve with --db pointing at the store"
        )


def _garbage(path):
    path.write_bytes(b"this is no database\n" * 20)


def _foreign(path):
    with sqlite3.connect(path) as conn:
        conn.execute("create table notes (t text)")


def _truncated(path):
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_garbage, "not an SQLite database (no SQLite header)"),
        (
            _foreign,
            f"not a ropewatch history store (no table {', '.join(sorted(metadata.tables))})",
        ),
        (_truncated, "truncated (its header counts 4096-byte pages"),
    ],
)
def test_a_store_that_is_not_one_is_refused_at_start_and_answered_503(
    served, tmp_path, make_report, capsys, damage, reason
):
    db, url = served
    assert _get(url + "/healthz") == (200, "ok")
    bad = tmp_path / "bad.sqlite"
    if damage is _truncated:
        _store(bad, make_report, "v", range(1, 60))
    damage(bad)
    with socket.socket() as taken:  # so that a store that is wrongly accepted cannot start a server
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", "--db", str(bad), "--port", str(taken.getsockname()[1])]) == 2
    line = stderr_line(capsys)
    assert line.startswith(f"ropewatch serve: history store {bad}: ") and reason in line
    os.replace(bad, db)  # the same file under a running dashboard
    for path in ("/", "/jobs", "/healthz"):
        status, body = _get(url + path)
        assert status == 503 and _single(body).startswith(f"history store {db}: ") and reason in body


def test_healthz_names_no_path_when_a_token_guards_the_pages(tmp_path, make_report):
    db = _store(tmp_path / "history.sqlite", make_report, "v", (1,))
    with serving(create_app(read_only_engine(str(db)), token="t" * 32)) as url:
        assert _get(url + "/healthz") == (200, "ok")
        _garbage(db)
        status, body = _get(url + "/healthz")
        assert (status, body) == (503, "history store unavailable (the reason is in the log)")


def test_run_ids_beyond_64_bits_are_not_found(served):
    _, url = served
    assert _get(url + "/runs/1")[0] == 200
    for big in (2**63 - 1, 2**63, 2**64, 10**30):
        status, body = _get(f"{url}/runs/{big}")
        assert status == 404 and f"no run {big}" in body


KILLED_WRITER = textwrap.dedent(
    """
    import os, sqlite3, sys
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("PRAGMA cache_size=1")  # the cache spills into the file before the commit
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE runs SET model_version = 'half-written', report_z = randomblob(20000)")
    os._exit(9)  # killed mid-write: the rollback journal stays behind, hot
    """
)


def test_a_hot_journal_left_by_a_killed_writer_is_rolled_back(tmp_path, make_report):
    db = _store(tmp_path / "history.sqlite", make_report, "rope-old", range(1, 30))
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(db)], check=False)
    assert (tmp_path / "history.sqlite-journal").stat().st_size > 0
    with pytest.raises(sqlite3.OperationalError, match="readonly"):  # what every page met before
        sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("select count(*) from runs").fetchall()
    with serving(create_app(read_only_engine(str(db)))) as url:
        status, body = _get(url + "/jobs")
        assert status == 200 and "rope-old" in body and "half-written" not in body
        assert _get(url + "/healthz") == (200, "ok")
    with sqlite3.connect(db) as conn:  # the last committed state, whole
        assert conn.execute("select count(*), min(model_version) from runs").fetchone() == (29, "rope-old")
        assert conn.execute("pragma integrity_check").fetchone() == ("ok",)


@contextmanager
def _unwritable(path):
    """``path`` may not be written, even by root (an immutable file; as another user, a 0444 file)."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True)
    else:
        path.chmod(0o444)
    try:
        yield
    finally:
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        else:
            path.chmod(0o644)


def test_a_hot_journal_that_may_not_be_rolled_back_says_what_to_do(tmp_path, make_report, capsys):
    db = _store(tmp_path / "history.sqlite", make_report, "rope-old", range(1, 30))
    subprocess.run([sys.executable, "-c", KILLED_WRITER, str(db)], check=False)
    hint = (
        f"a writer was killed mid-write and left a hot rollback journal ({db}-journal) that a read-only "
        "reader cannot roll back"
    )
    what_to_do = f"run `ropewatch history --db {db}` (or the next validate-job) once as a user who may write"
    with _unwritable(db):
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            assert main(["serve", "--db", str(db), "--port", str(taken.getsockname()[1])]) == 2
        line = stderr_line(capsys)
        assert (
            line.startswith(f"ropewatch serve: history store {db}: ") and hint in line and what_to_do in line
        )
        with serving(create_app(read_only_engine(str(db)))) as url:
            for path in ("/", "/jobs", "/healthz"):
                status, body = _get(url + path)
                assert status == 503 and hint in _single(body) and what_to_do in body
    with serving(create_app(read_only_engine(str(db)))) as url:  # once it may: rolled back, served
        status, body = _get(url + "/jobs")
        assert status == 200 and "rope-old" in body and "half-written" not in body


# -- the token file (item 10) ------------------------------------------------------------------


def test_the_token_is_the_first_line_of_the_file(tmp_path, monkeypatch):
    monkeypatch.delenv("ROPEWATCH_SERVE_TOKEN", raising=False)
    f = tmp_path / "token"
    f.write_text("  s3cret-token-1  \nsecond line: a comment\n")
    assert read_token(f) == "s3cret-token-1"
    f.write_bytes(b"crlf-token\r\n")
    assert read_token(f) == "crlf-token"
    assert read_token(None) is None


@pytest.mark.parametrize(
    ("content", "env", "reason"),
    [
        ("t\u00f6k\u00e9n-123\n", None, "the token must be printable ASCII without spaces"),
        ("two words\n", None, "the token must be printable ASCII without spaces"),
        ("\nsecond-line-token\n", None, "is empty (the token is its first line)"),
        (None, "t\u00f6k\u00e9n", "the token must be printable ASCII without spaces"),
    ],
)
def test_a_token_that_cannot_be_sent_is_refused_at_start(tmp_path, capsys, monkeypatch, content, env, reason):
    db = tmp_path / "history.sqlite"
    open_store(str(db)).close()
    argv = ["serve", "--db", str(db)]
    if content is not None:
        (tmp_path / "token").write_text(content, encoding="utf-8")
        argv += ["--token-file", str(tmp_path / "token")]
        monkeypatch.delenv("ROPEWATCH_SERVE_TOKEN", raising=False)
    else:
        monkeypatch.setenv("ROPEWATCH_SERVE_TOKEN", env)
    with socket.socket() as taken:  # so that a token that is wrongly accepted cannot start a server
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main([*argv, "--port", str(taken.getsockname()[1])]) == 2
    line = stderr_line(capsys)
    assert line.startswith("ropewatch serve: ") and reason in line and "Traceback" not in line


def test_validate_job_refuses_a_cvat_token_that_cannot_be_sent(tmp_path, capsys, monkeypatch):
    """The same rule for validate-job's CVAT_ACCESS_TOKEN: one line before anything is fetched (it was
    a UnicodeEncodeError per job, deep in the HTTP client)."""
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", "\u0442\u043e\u043a\u0435\u043d")
    argv = ["validate-job", "101", "--server-host", "http://127.0.0.1:9", "--out", str(tmp_path / "out")]
    assert main([*argv, "--db", str(tmp_path / "h.sqlite")]) == 2
    assert stderr_line(capsys) == (
        "validate-job: CVAT_ACCESS_TOKEN: the token must be printable ASCII without spaces "
        "(HTTP headers carry it)"
    )
    assert not (tmp_path / "h.sqlite").exists() and not (tmp_path / "out").exists()


def test_the_store_check_on_both_backends(history_db, make_report):
    """An empty database (SQLite file or PostgreSQL database) is not a ropewatch store; once
    validate-job's code created the schema and stored a run, it is."""
    if history_db.startswith("sqlite"):
        sqlite3.connect(history_db.removeprefix("sqlite:///")).close()
    with pytest.raises(StoreUnavailable, match=r"not a ropewatch history store \(no table alerts, "):
        ReadOnlyStore(read_only_engine(history_db)).check()
    store = open_store(history_db)
    store.record_run(make_report(job=1))
    store.close()
    ReadOnlyStore(read_only_engine(history_db)).check()
