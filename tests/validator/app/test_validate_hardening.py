"""validate-job against bad input and failures: references, options, credentials in the host, locked
jobs, deadlines, and a job's output as one unit (kill -9, read-only / full database, full disk)."""

from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import sqlalchemy as sa

from ropewatch_validator.cli.main import main
from ropewatch_validator.ops import history
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic
from support.hostile import trickling_server
from support.output import stderr_line

SECRET = "pw-Zq9-s3cret"


@pytest.fixture
def cvat():
    state = sandbox.CvatState(basic=("alice", SECRET))
    state.add(synthetic.generate(8, project_id=3))
    state.add(synthetic.generate(8, job_id=102, task_id=11, seed=1))  # an annotation job of the same task
    gt = synthetic.generate(8, job_id=103, seed=0, p_miss=0, p_extra=0, extras=False)
    gt.job["type"] = "ground_truth"
    state.add(gt)
    other = synthetic.generate(8, job_id=203, task_id=21, seed=2, extras=False)
    other.job["type"] = "ground_truth"  # a GT job, but of another task
    state.add(other)
    with sandbox.serve(state) as (url, st):
        yield url, st


def run(url, tmp_path, *extra, db=None):
    return main(
        [
            "validate-job",
            "--server-host",
            url,
            "--auth",
            f"alice:{SECRET}",
            "--out",
            str(tmp_path / "out"),
            "--db",
            db or str(tmp_path / "h.sqlite"),
            *extra,
        ]
    )


def stored_runs(path) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
        return conn.execute("select count(*) from runs").fetchone()[0] if "runs" in tables else 0


def leftovers(out) -> list[str]:
    """Hidden staging folders and temp files anywhere under the report folder."""
    return sorted(str(p.relative_to(out)) for p in out.rglob(".*")) if out.exists() else []


# -- references and options (item 5, 10) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--iou", "1.5"], "validate-job: --iou must be in (0, 1], got 1.5"),
        (["--iou", "nan"], "validate-job: --iou must be in (0, 1], got nan"),
        (["--iou", "0"], "validate-job: --iou must be in (0, 1], got 0.0"),
        (["--low-iou", "-1"], "validate-job: --low-iou must be in [0, 1], got -1.0"),
        (
            ["--since", "yesterday"],
            "validate-job: --since takes an ISO time (2026-11-23, 2026-11-23T10:00:00Z) or 'last', "
            "not 'yesterday'",
        ),
        (
            ["--reference-job", "101"],
            "validate-job: --reference-job 101 is also a job to validate: a job is not its own reference",
        ),
        (["--gt-job", "x"], "validate-job: --gt-job takes a job id or 'auto', got 'x'"),
        (["--timeout", "0"], "validate-job: --timeout must be a positive number of seconds, got 0.0"),
        (
            ["--job-deadline", "inf"],
            "validate-job: --job-deadline must be a positive number of seconds, got inf",
        ),
    ],
)
def test_bad_options_exit_2_with_one_line_and_store_nothing(cvat, tmp_path, capsys, args, line):
    url, state = cvat
    assert run(url, tmp_path, "101", *args) == 2
    assert stderr_line(capsys) == line
    assert not (tmp_path / "h.sqlite").exists() and not (tmp_path / "out").exists()
    assert state.requests == []  # refused before anything was fetched


@pytest.mark.parametrize(
    ("job", "args", "reason"),
    [
        ("102", ["--gt-job", "102"], "--gt-job 102 is the job itself"),
        (
            "101",
            ["--gt-job", "102"],
            "--gt-job 102 is not a Ground Truth job of task 11 (it is a annotation job of task 11)",
        ),
        (
            "101",
            ["--gt-job", "203"],
            "--gt-job 203 is not a Ground Truth job of task 11 (it is a ground_truth job of task 21)",
        ),
    ],
)
def test_a_reference_that_is_not_one_fails_the_job(cvat, tmp_path, capsys, job, args, reason):
    url, _ = cvat
    assert run(url, tmp_path, job, *args) == 2
    assert stderr_line(capsys) == f"validate-job: job {job}: could not validate: BadReference: {reason}"
    assert stored_runs(tmp_path / "h.sqlite") == 0 and not (tmp_path / "out").exists()


# -- credentials in --server-host (item 6) ------------------------------------------------------------


def test_credentials_in_the_host_never_reach_any_output(cvat, tmp_path, capfd):
    url, _ = cvat
    host = url.replace("http://", f"http://alice:{SECRET}@")
    rules = tmp_path / "rules.yaml"
    rules.write_text("rule:\n- {name: any, metric: detection.f1, op: '<', threshold: 2}\n")
    common = ["--out", str(tmp_path / "out"), "--db", str(tmp_path / "h.sqlite"), "--rules", str(rules)]
    assert main(["validate-job", "101", "--server-host", host, *common]) == 1  # the rule fires
    assert main(["validate-job", "777", "--server-host", host, *common]) == 2  # not found: an error line
    assert main(["validate-job", "1", "--server-host", f"{host}/x:y", "--server-port", "1", *common]) == 2
    printed = capfd.readouterr()  # what Python and any library wrote to the process's stdout and stderr
    outputs = {
        "stdout": printed.out,
        "stderr": printed.err,
        **{
            str(p): p.read_bytes().decode("utf-8", "replace")
            for p in (tmp_path / "out").rglob("*")
            if p.is_file()
        },
        "history": (tmp_path / "h.sqlite").read_bytes().decode("utf-8", "replace"),
    }
    assert len(outputs) == 2 + 3 + 1  # report.json, .md and .html of job 101
    assert "job 777 on " in outputs["stderr"] and "not found" in outputs["stderr"]
    for name, text in outputs.items():
        assert SECRET not in text, name
        assert "alice:" not in text, name
    report = json.loads((tmp_path / "out" / "job-101" / "report.json").read_text())
    assert report["source"]["host"] == url


# -- locked jobs and deadlines (item 1) ---------------------------------------------------------------


def test_a_job_locked_by_another_run_is_not_reported_as_validated(cvat, tmp_path, capsys):
    url, state = cvat
    annotations = "/api/jobs/101/annotations"
    state.fail(0, path_contains=annotations, delay_s=2.0)  # the first run stalls there, holding the job
    (tmp_path / "first").mkdir()
    first = threading.Thread(target=run, args=(url, tmp_path / "first", "101"))
    first.start()
    deadline = time.monotonic() + 30
    while not any(annotations in path for path in state.requests) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert run(url, tmp_path, "101", "--job-deadline", "0.3") == 2  # a second run, meanwhile
    finally:
        first.join()
    assert stderr_line(capsys) == (
        "validate-job: job 101: not validated: another run held this job's lock for over 0.3 s"
    )
    assert not (tmp_path / "out").exists() and stored_runs(tmp_path / "h.sqlite") == 0


def test_a_job_that_never_ends_is_cut_at_its_deadline(tmp_path, capsys):
    with trickling_server(0.1, body_bytes=60) as url:  # 6 s of drip against a 1 s deadline
        code = main(
            ["validate-job", "1", "--server-host", url, "--job-deadline", "1", "--out", str(tmp_path / "out"),
             "--db", str(tmp_path / "h.sqlite")]
        )  # fmt: skip
    assert code == 2
    assert stderr_line(capsys).startswith(
        f"validate-job: job 1: could not validate: FetchError: job 1 on {url}: "
        "no complete answer before the job's deadline"
    )


# -- one unit of output (item 9) ----------------------------------------------------------------------

KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from ropewatch_validator.cli.main import main
    from ropewatch_validator.ops import history
    from ropewatch_validator.render import report
    where = sys.argv[1]
    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "html":
        report.html_page = die  # while the report files are being written
    else:
        history.HistoryStore.record_run = die  # reports in place, history not yet committed
    sys.exit(main(sys.argv[2:]))
    """
)


@pytest.mark.parametrize("where", ["html", "commit"])
def test_kill_9_leaves_no_half_output_and_the_next_run_completes(cvat, tmp_path, where):
    url, _ = cvat
    out, db = tmp_path / "out", tmp_path / "h.sqlite"
    argv = ["validate-job", "101", "--server-host", url, "--auth", f"alice:{SECRET}", "--out", str(out),
            "--db", str(db), "--quiet"]  # fmt: skip
    killed = subprocess.run([sys.executable, "-c", KILLED, where, *argv], capture_output=True, timeout=120)
    assert killed.returncode == -9
    assert stored_runs(db) == 0
    if where == "html":  # killed mid-write: no report folder at all, only the hidden staging one
        assert not (out / "job-101").exists()
    else:  # killed between the two: complete reports without a row, which the next run rewrites
        assert sorted(p.name for p in (out / "job-101").iterdir()) == [
            "report.html",
            "report.json",
            "report.md",
        ]
    assert main(argv) == 0
    assert stored_runs(db) == 1 and leftovers(out) == []
    assert sorted(p.name for p in (out / "job-101").iterdir()) == ["report.html", "report.json", "report.md"]


def _bump(state, job_id: int) -> None:
    state.jobs[job_id]["updated_date"] = "2026-11-22T00:00:00.000000Z"


def test_read_only_database_keeps_the_previous_reports(cvat, tmp_path, capsys):
    url, state = cvat
    out, db = tmp_path / "out", tmp_path / "h.sqlite"
    assert run(url, tmp_path, "101", "--quiet") == 0
    before = (out / "job-101" / "report.json").read_text()
    _bump(state, 101)  # a new job state: this run must store a row, and cannot
    assert run(url, tmp_path, "101", "--quiet", db=f"sqlite:///file:{db}?mode=ro&uri=true") == 2
    line = stderr_line(capsys)
    assert line.startswith("validate-job: job 101: could not store: HistoryError: history store ")
    assert "readonly database" in line
    assert (out / "job-101" / "report.json").read_text() == before and leftovers(out) == []
    assert stored_runs(db) == 1


def test_full_database_leaves_no_report(cvat, tmp_path, capsys, monkeypatch):
    url, _ = cvat
    real_open = history.open_store

    def full_store(db=None, **kwargs):
        with sqlite3.connect(str(db)) as new:  # small pages: a run's compressed report needs new ones
            new.execute("pragma page_size = 512")
            new.execute("vacuum")
        store = real_open(db, **kwargs)
        with sqlite3.connect(str(db)) as probe:
            pages = probe.execute("pragma page_count").fetchone()[0]
        sa.event.listen(
            store.engine, "connect", lambda conn, _: conn.execute(f"pragma max_page_count={pages}")
        )
        store.engine.dispose()  # new connections get the cap: SQLite answers "database or disk is full"
        return store

    monkeypatch.setattr(history, "open_store", full_store)
    assert run(url, tmp_path, "101", "--quiet") == 2
    assert "database or disk is full" in stderr_line(capsys)
    assert not (tmp_path / "out" / "job-101").exists() and leftovers(tmp_path / "out") == []


def test_full_disk_while_writing_reports_leaves_no_temp_file(cvat, tmp_path, capsys, monkeypatch):
    url, _ = cvat
    import ropewatch_core.files as files

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", no_space)
    assert run(url, tmp_path, "101", "--quiet") == 2
    assert "No space left on device" in stderr_line(capsys)
    assert list((tmp_path / "out").iterdir()) == [] and stored_runs(tmp_path / "h.sqlite") == 0


# -- --since last (item 8) ----------------------------------------------------------------------------


def test_since_last_retries_a_job_whose_last_attempt_failed(cvat, tmp_path, capsys):
    """Night 1: job 101 fails on a 503, job 102 is stored. Night 2 (`--since last`): 101 is tried again
    (nothing of it is stored), 102 is skipped (its stored state is its listed one)."""
    url, state = cvat
    state.fail(503, count=1, path_contains="/api/jobs/101/annotations")
    nightly = ("--task", "11", "--since", "last", "--retries", "0", "--quiet")
    assert run(url, tmp_path, *nightly) == 2
    assert "job 101: could not validate" in capsys.readouterr().err
    assert stored_runs(tmp_path / "h.sqlite") == 1
    assert run(url, tmp_path, *nightly) == 0
    assert stored_runs(tmp_path / "h.sqlite") == 2
    with sqlite3.connect(tmp_path / "h.sqlite") as conn:
        assert [r[0] for r in conn.execute("select job_id from runs order by id")] == [102, 101]
