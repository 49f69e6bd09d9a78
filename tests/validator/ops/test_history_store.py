"""History store on SQLite and a real PostgreSQL: idempotent runs, trends, baselines, crash safety."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest
import sqlalchemy as sa

from ropewatch_validator.ops.baselines import own_levels
from ropewatch_validator.ops.history import HistoryError, JobState, open_store, runs
from support.alerts import always_fires


def run_count(store) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one()


def test_run_stored_once_per_job_state(history_db, make_report):
    store = open_store(history_db)
    report = make_report(job=7, updated="2026-11-20T10:00:00.000000Z")
    run_id, created = store.record_run(report)
    assert created
    assert store.record_run(report) == (run_id, False)  # same job state: idempotent
    assert store.has_run(JobState("http://cvat.local:8080", 7, "2026-11-20T10:00:00.000000Z"))
    _, created2 = store.record_run(make_report(job=7, updated="2026-11-21T10:00:00.000000Z"))
    assert created2 and run_count(store) == 2
    row = store.trend(job=7)[0]
    # Hand-computed from the confusion matrix [[40, 5], [3, 52]]: P(wrong)=40/43, R(wrong)=40/45.
    p, r = 40 / 43, 40 / 45
    assert row["classes"]["wrong"]["f1"] == pytest.approx(2 * p * r / (p + r))
    assert list(row["classes"]) == ["wrong", "correct"] and row["classes"]["correct"]["support"] == 55
    assert (row["dangerous_flips"], row["unsafe_value"]) == (5, "wrong")
    assert row["flips_per_1000"] == pytest.approx(5 / 106 * 1000)
    assert (row["task_id"], row["project_id"], row["model_version"], row["references"]) == (10, 3, "v1", 106)
    assert store.reports([run_id])[0].attribute.confusion_matrix == [[40, 5], [3, 52]]
    store.close()


def test_trend_filters_and_nan_become_null(history_db, make_report):
    store = open_store(history_db)
    store.record_run(make_report(job=1, project=3, model_version="v1", updated="2026-11-01T00:00:00Z"))
    store.record_run(make_report(job=2, project=4, model_version="v2", updated="2026-11-02T00:00:00Z"))
    odd = make_report(job=3, project=3, model_version=None, updated="2026-11-03T00:00:00Z")
    odd.detection.ap = float("nan")
    odd.attribute.accuracy = float("inf")
    store.record_run(odd)
    assert [r["job_id"] for r in store.trend(project=3)] == [1, 3]
    assert [r["job_id"] for r in store.trend(model_version="v2")] == [2]
    assert [r["model_version"] for r in store.trend(job=3)] == ["unknown"]
    assert store.trend(job=3)[0]["det_ap"] is None and store.trend(job=3)[0]["accuracy"] is None
    assert store.reports([store.trend(job=3)[0]["id"]])[0].detection.ap is None
    assert len(store.trend()) == 3
    assert store.last_job_state("http://cvat.local:8080/", 3) == "2026-11-03T00:00:00.000000Z"
    assert store.last_job_state("http://cvat.local:8080", 99) is None
    store.close()


def test_baseline_is_median_of_first_runs_or_pinned(history_db, make_report):
    store = open_store(history_db)
    ids = []
    for i, wc in enumerate([5, 1, 9, 30, 30]):  # flips wrong->correct per run
        ids.append(store.record_run(make_report(job=i + 1, cm=((45 - wc, wc), (3, 52))))[0])
    path = "errors.flip_wrong_to_correct"
    assert own_levels(store, "v1", [path], first_n=3) == {path: 5}  # median of 5, 1, 9
    assert store.baseline_runs("v1", first_n=3) == (ids[:3], False)
    store.pin_baseline("v1", [ids[3], ids[4]], note="after relabel")
    assert own_levels(store, "v1", [path], first_n=3) == {path: 30}
    assert store.baseline_runs("v1") == (sorted(ids[3:]), True)
    assert own_levels(store, "v2", [path]) == {path: None}
    with pytest.raises(ValueError, match="not runs of model version 'v2'"):
        store.pin_baseline("v2", [ids[0]])
    assert store.unpin_baseline("v1") and own_levels(store, "v1", [path], first_n=3) == {path: 5}
    store.close()


def test_exception_inside_transaction_leaves_no_half_run(history_db, make_report):
    store = open_store(history_db)

    def boom(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO DELIVERIES"):
            raise RuntimeError("disk gone")

    sa.event.listen(store.engine, "after_cursor_execute", boom)
    fired = always_fires(make_report())
    with pytest.raises(RuntimeError, match="disk gone"):
        store.record_run(make_report(), fired, targets=["ops"])
    assert run_count(store) == 0 and store.delivery_status() == []
    sa.event.remove(store.engine, "after_cursor_execute", boom)
    assert store.record_run(make_report(), fired, targets=["ops"])[1]
    assert [d.alert_key for d in store.pending()] == [fired[0].key]
    store.close()


KILL_SCRIPT = textwrap.dedent(
    """
    import json, os, signal, sys
    import sqlalchemy as sa
    from ropewatch_validator.ops.alerts.rules import AlertConfig, Rule, fired_alerts
    from ropewatch_validator.ops.history import open_store
    from ropewatch_validator.render.model import Report
    store = open_store(sys.argv[1])
    report = Report.model_validate_json(sys.argv[2])
    rule = Rule(name="r", metric="counts.references", op=">=", threshold=0)
    def kill(conn, cursor, statement, *args):
        if statement.lstrip().upper().startswith("INSERT INTO ALERTS"):
            os.kill(os.getpid(), signal.SIGKILL)  # the run row is written, the commit is not
    sa.event.listen(store.engine, "after_cursor_execute", kill)
    store.record_run(report, fired_alerts(report, AlertConfig(rules=(rule,))), ["ops"])
    """
)


def test_kill_mid_write_leaves_no_half_run(history_db, make_report):
    report = make_report()
    proc = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, history_db, report.to_json()],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    store = open_store(history_db)
    assert run_count(store) == 0 and store.pending() == []
    assert store.record_run(report, always_fires(report), ["ops"])[1]
    assert run_count(store) == 1 and len(store.pending()) == 1
    store.close()


def test_corrupted_sqlite_file_clear_error_then_repair(tmp_path, make_report):
    db = tmp_path / "history.sqlite"
    db.write_bytes(b"this is not a database, just bytes " * 200)
    with pytest.raises(HistoryError, match="damaged: move it aside") as exc:
        open_store(str(db))
    assert str(db) in str(exc.value)
    db.rename(tmp_path / "history.sqlite.broken")  # the repair an operator does
    store = open_store(str(db))
    assert store.record_run(make_report())[1] and run_count(store) == 1
    store.close()


def test_locked_sqlite_file_clear_error_then_next_run_completes(tmp_path, make_report):
    db = tmp_path / "history.sqlite"
    store = open_store(str(db), sqlite_timeout_s=0.2)
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(HistoryError, match="locked.*another process"):
        store.record_run(make_report())
    locker.execute("ROLLBACK")
    locker.close()
    assert store.record_run(make_report())[1] and run_count(store) == 1
    store.close()


def test_default_location_from_env_and_password_never_in_errors(tmp_path, monkeypatch, make_report):
    monkeypatch.setenv("ROPEWATCH_DB", str(tmp_path / "sub" / "h.sqlite"))
    store = open_store()
    store.record_run(make_report())
    assert (tmp_path / "sub" / "h.sqlite").is_file()
    store.close()
    with pytest.raises(HistoryError) as exc:
        open_store("postgresql://me:s3cret-pw@127.0.0.1:1/nowhere")
    assert "s3cret-pw" not in str(exc.value) and "127.0.0.1" in str(exc.value)
    with pytest.raises(ValueError, match="source lacks job_updated_date"):
        report = make_report()
        report.source.job_updated_date = None
        open_store(str(tmp_path / "x.sqlite")).record_run(report)
