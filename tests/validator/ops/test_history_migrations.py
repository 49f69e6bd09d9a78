"""The history schema is migrated by Alembic: a store made by release 0.1 is upgraded and read, a new
store equals the code's tables, a store newer than the code is refused, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import zlib

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from ropewatch_validator.ops.alerts.delivery import Notifier
from ropewatch_validator.ops.alerts.rules import Webhook
from ropewatch_validator.ops.baselines import own_levels
from ropewatch_validator.ops.history import HistoryError, alembic_config, metadata, normalize_url, open_store


def head() -> str:
    """The newest revision of ops/migrations (each migration's own test checks what it adds)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(None)).get_current_head()


# The DDL release 0.1 created: SQLAlchemy's CREATE statements for the tables of validator/history.py
# at commit b614960 (`metadata.create_all`), {serial} being SERIAL on PostgreSQL, INTEGER on SQLite.
DDL_0_1 = """
CREATE TABLE baselines (
    model_version VARCHAR(256) NOT NULL, run_ids JSON NOT NULL, pinned_at VARCHAR(32) NOT NULL, note TEXT,
    PRIMARY KEY (model_version)
);
CREATE TABLE runs (
    id {serial} NOT NULL, host VARCHAR(512) NOT NULL, job_id INTEGER NOT NULL,
    job_updated_date VARCHAR(64) NOT NULL, task_id INTEGER, project_id INTEGER,
    recorded_at VARCHAR(32) NOT NULL, generated_at VARCHAR(64), model_version VARCHAR(256) NOT NULL,
    settings JSON NOT NULL, frames INTEGER, frames_evaluated INTEGER, predictions INTEGER,
    "references" INTEGER,
    det_precision FLOAT, det_recall FLOAT, det_f1 FLOAT, det_ap FLOAT,
    wrong_precision FLOAT, wrong_recall FLOAT, wrong_f1 FLOAT, wrong_support FLOAT,
    correct_precision FLOAT, correct_recall FLOAT, correct_f1 FLOAT, correct_support FLOAT,
    accuracy FLOAT, macro_f1 FLOAT, flips_wrong_to_correct FLOAT, flips_per_1000 FLOAT,
    report JSON NOT NULL,
    PRIMARY KEY (id), CONSTRAINT uq_runs_job_state UNIQUE (host, job_id, job_updated_date)
);
CREATE INDEX ix_runs_model_version ON runs (model_version, recorded_at);
CREATE INDEX ix_runs_project ON runs (project_id, recorded_at);
CREATE TABLE alerts (
    "key" VARCHAR(64) NOT NULL, run_id INTEGER NOT NULL, rule VARCHAR(256) NOT NULL,
    created_at VARCHAR(32) NOT NULL, payload JSON NOT NULL,
    PRIMARY KEY ("key"), FOREIGN KEY(run_id) REFERENCES runs (id)
);
CREATE TABLE deliveries (
    alert_key VARCHAR(64) NOT NULL, target VARCHAR(256) NOT NULL, status VARCHAR(16) NOT NULL,
    attempts INTEGER NOT NULL, last_error TEXT, sent_at VARCHAR(32),
    PRIMARY KEY (alert_key, target), FOREIGN KEY(alert_key) REFERENCES alerts ("key")
)
"""


def _old_report(make_report, job: int, wc: int) -> dict:
    """A report.json of schema 1.0, as 0.1 stored it: full per-object rows in ``objects``."""
    report = json.loads(make_report(job=job, cm=((45 - wc, wc), (3, 52))).to_json())
    report["schema_version"] = "1.0"
    report["objects"] = {
        "columns": ["role", "frame", "error"],
        "rows": [["prediction", f, "tp"] for f in range(104)],
    }
    return report


def _make_0_1_store(url: str, reports: list[dict]) -> None:
    engine = sa.create_engine(normalize_url(url))
    serial = "SERIAL" if engine.dialect.name == "postgresql" else "INTEGER"
    runs = sa.table(
        "runs",
        *(sa.column(c) for c in ("id", "host", "job_id", "job_updated_date", "recorded_at", "model_version")),
        *(sa.column(c) for c in ("wrong_f1", "flips_wrong_to_correct", "references")),
        sa.column("settings", sa.JSON),
        sa.column("report", sa.JSON),
    )
    with engine.begin() as conn:
        for statement in DDL_0_1.split(";"):
            conn.exec_driver_sql(statement.format(serial=serial))
        for i, r in enumerate(reports, start=1):
            conn.execute(
                sa.insert(runs).values(
                    host=r["source"]["host"],
                    job_id=r["source"]["job"],
                    job_updated_date=f"2026-11-0{i}T00:00:00.000000Z",
                    recorded_at=f"2026-11-0{i}T01:00:00.000000Z",
                    model_version=r["model_version"],
                    wrong_f1=r["attribute"]["per_class"]["wrong"]["f1"],
                    flips_wrong_to_correct=r["errors"]["flip_wrong_to_correct"],
                    references=r["counts"]["references"],
                    settings=r["settings"],
                    report=r,
                )
            )
        for statement in (
            "INSERT INTO baselines (model_version, run_ids, pinned_at, note)"
            " VALUES ('v1', '[2]', 'x', 'kept')",
            """INSERT INTO alerts ("key", run_id, rule, created_at, payload)"""
            """ VALUES ('k1', 1, 'r', 'x', '{"rule": "r"}')""",
            "INSERT INTO deliveries (alert_key, target, status, attempts) VALUES ('k1', 'ops', 'pending', 1)",
        ):
            conn.exec_driver_sql(statement)
    engine.dispose()


def test_store_of_release_0_1_is_upgraded_and_read(history_db, make_report):
    _make_0_1_store(history_db, [_old_report(make_report, 1, 5), _old_report(make_report, 2, 9)])
    store = open_store(history_db)
    with store.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head()
        columns = {c["name"] for c in sa.inspect(conn).get_columns("runs")}
    assert "report" not in columns and "wrong_f1" not in columns and "report_z" in columns
    first, second = store.trend()
    # Job 1: confusion [[40, 5], [3, 52]]: P(wrong) = 40/43, R(wrong) = 40/45; 5 flips wrong->correct.
    p, r = 40 / 43, 40 / 45
    assert first["classes"]["wrong"]["f1"] == pytest.approx(2 * p * r / (p + r))
    assert list(first["classes"]) == ["wrong", "correct"] and first["classes"]["correct"]["support"] == 55
    assert (first["dangerous_flips"], second["dangerous_flips"], first["unsafe_value"]) == (5, 9, "wrong")
    old = store.reports([1])[0]
    assert old.schema_version == "1.0" and old.attribute.confusion_matrix == [[40, 5], [3, 52]]
    assert old.objects.columns == ["role", "frame", "error"] and old.objects.rows == []  # rows left the DB
    # the pinned baseline, the alert and its pending delivery survive
    assert store.baseline_runs("v1") == ([2], True)
    assert own_levels(store, "v1", ["dangerous_flips"]) == {"dangerous_flips": 9}
    assert [(d.alert_key, d.target, d.attempts) for d in store.pending()] == [("k1", "ops", 1)]
    # 0.1's payload lacks most of an alert: sending it is refused with a reason, and it stays queued
    result = Notifier([Webhook(name="ops", url="http://127.0.0.1:9/never")]).flush(store)
    assert result.errors == (
        "ops: the stored alert is incomplete (written by an older ropewatch) and cannot be sent",
    )
    assert [(d.alert_key, d.attempts) for d in store.pending()] == [("k1", 2)]
    # and the upgraded store keeps working
    run_id, created = store.record_run(make_report(job=3, updated="2026-11-05T00:00:00Z"))
    assert created and run_id == 3 and [r["job_id"] for r in store.trend()] == [1, 2, 3]
    store.close()
    assert open_store(history_db).trend(job=3)[0]["dangerous_flips"] == 5  # reopening migrates nothing


def test_migrations_build_exactly_the_codes_tables(history_db):
    # A new store is created from the code's tables and stamped; the migrations must build the same.
    engine = sa.create_engine(normalize_url(history_db))
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    engine.dispose()
    store = open_store(history_db)  # already at the head: nothing to do
    with store.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head()
    store.close()


def test_store_newer_than_the_code_is_refused(tmp_path):
    db = str(tmp_path / "h.sqlite")
    open_store(db).close()
    with sa.create_engine(normalize_url(db)).begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    with pytest.raises(HistoryError, match="revision 0099 is newer than this ropewatch"):
        open_store(db)


def test_stored_report_is_compressed_without_per_object_rows(tmp_path, make_report):
    store = open_store(str(tmp_path / "h.sqlite"))
    report = make_report()
    store.record_run(report)
    with store.engine.connect() as conn:
        blob = conn.exec_driver_sql("SELECT report_z FROM runs").scalar_one()
    stored = json.loads(zlib.decompress(blob))
    assert stored["objects"] == {"columns": ["role", "frame"], "rows": []} and len(report.objects.rows) == 106
    assert stored["attribute"] == json.loads(report.to_json())["attribute"]
    store.close()


def test_store_of_release_0_2_gains_reference_pins_and_backtests(history_db, make_report):
    """Revision 0003 (issue 17, item 5) adds two tables to a 0.2 store and changes no row."""
    _make_0_1_store(history_db, [_old_report(make_report, 1, 5), _old_report(make_report, 2, 9)])
    engine = sa.create_engine(normalize_url(history_db))
    with engine.begin() as conn:
        command.stamp(alembic_config(conn), "0001")  # what open_store does with a 0.1 store
        command.upgrade(alembic_config(conn), "0002")  # the store as release 0.2 left it
        assert not sa.inspect(conn).has_table("version_references")
    engine.dispose()
    store = open_store(history_db)
    with store.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == head()
        assert {"version_references", "backtest_pairs"} <= set(sa.inspect(conn).get_table_names())
    assert [r["dangerous_flips"] for r in store.trend()] == [5, 9] and store.baseline_runs("v1") == (
        [2],
        True,
    )
    store.record_run(make_report(job=3, model_version="v2", updated="2026-11-05T00:00:00Z"))
    store.pin_reference("v2", "v1", note="the release we run")
    store.add_backtest_pair(
        "v1", "v2", "backtest.json", 0.01, {"flips_per_1000": {"estimate": 4.0, "low": 1.0, "high": 7.0}}
    )
    assert store.pinned_reference("v2") == "v1"
    # read the other way round, the difference and its interval change sign
    pair = store.backtest_pair("v2", "v1")
    assert pair is not None and pair["diffs"]["flips_per_1000"] == {
        "estimate": -4.0,
        "low": -7.0,
        "high": -1.0,
    }
    store.close()
