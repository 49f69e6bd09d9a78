"""The dashboard's queries on both history backends (SQLite and a real PostgreSQL), with figures
worked out by hand from the runs' confusion matrices and detection counts; every page answers 200
through a read-only engine (PostgreSQL: a read-only session)."""

from __future__ import annotations

import re
import urllib.request

import pytest
import sqlalchemy as sa

from ropewatch_validator.ops.history import open_store
from ropewatch_validator.web import queries
from ropewatch_validator.web.app import create_app, read_only_engine
from support.alerts import always_fires
from support.webserver import serving


@pytest.fixture
def filled(history_db, make_report):
    store = open_store(history_db)
    # v1: two jobs; v2: one job that fires an alert queued for three webhooks
    store.record_run(make_report(job=1, cm=((40, 5), (3, 52)), det=(100, 4, 6), model_version="v1", task=10))
    store.record_run(
        make_report(job=2, cm=((30, 10), (0, 60)), det=(90, 10, 10), model_version="v1", task=11)
    )
    job3 = make_report(job=3, cm=((20, 20), (5, 55)), det=(80, 20, 20), model_version="v2", task=11)
    [alert] = always_fires(job3, "flips", "flips on job 3")
    run3, _ = store.record_run(job3, [alert], ["chat", "ops", "pager"])
    store.mark_delivery(alert.key, "ops", None)
    store.mark_delivery(alert.key, "pager", "HTTP 503")
    store.close()
    return history_db, run3


def test_queries_pool_runs_by_hand(filled):
    db, run3 = filled
    engine = read_only_engine(db)
    with engine.connect() as conn:
        v = {r["model_version"]: r for r in queries.versions(conn)}
        # v1: TP 100 + 90, references (100 + 6) + (90 + 10) = 206, predictions 104 + 100 = 204
        assert v["v1"]["det_recall"] == pytest.approx(190 / 206)
        assert v["v1"]["det_precision"] == pytest.approx(190 / 204)
        # wrong→correct flips 5 + 10 per 206 persons; F1(wrong) = 2·hit / (pred + ref) per run, then the mean
        assert v["v1"]["flips_per_1000"] == pytest.approx(15 / 206 * 1000)
        assert v["v1"]["f1"]["wrong"] == pytest.approx((80 / 88 + 60 / 70) / 2)
        assert v["v1"]["f1"]["correct"] == pytest.approx((104 / (57 + 55) + 120 / (70 + 60)) / 2)
        assert (v["v1"]["jobs"], v["v1"]["runs"], v["v1"]["frames"], v["v1"]["persons"]) == (2, 2, 100, 206)
        assert v["v1"]["alerts"] == [] and v["v2"]["alerts"] == ["flips"]

        table = queries.label_table(queries.version_labels(conn, "v1", 200))
        wrong = next(row for row in table["labels"] if row["label"] == "wrong")
        # matched wrong references 45 + 40, kept 40 + 30, flipped 5 + 10
        assert (wrong["detected"], wrong["kept"], wrong["flipped"]) == (85, 70, 15)
        assert table["errors"]["flip_wrong_to_correct"] == 15 and table["runs"] == 2

        rows, total = queries.jobs(conn, queries.Filters(task=11))
        assert total == 2 and [r["job_id"] for r in rows] == [3, 2]  # newest first
        assert rows[0]["alerts"] == ["flips"]
        assert queries.jobs(conn, queries.Filters(task=11, version="v1"))[1] == 1

        [a] = queries.alert_list(conn)
        assert a["run_id"] == run3 and a["message"] == "flips on job 3"
        states = {d["target"]: d["state"] for d in a["deliveries"]}
        assert states == {"chat": "pending", "ops": "sent", "pager": "failed"}

        t = queries.trend(conn, "v1", 10, [1, 2])
        assert [r["job_id"] for r in t.runs] == [1, 2]
        assert t.baseline["wrong_f1"] == pytest.approx((60 / 70, (80 / 88 + 60 / 70) / 2, 80 / 88))


def test_every_page_answers_through_a_read_only_engine(filled):
    db, run3 = filled
    engine = read_only_engine(db)
    with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:  # the session cannot write
        conn.execute(sa.text("DELETE FROM alerts"))
    pages = ["/", "/trend?version=v1", "/version?name=v2", "/jobs?task=11", "/alerts", f"/runs/{run3}"]
    with serving(create_app(engine)) as url:
        for page in pages:
            with urllib.request.urlopen(url + page, timeout=30) as r:
                assert r.status == 200, page


def test_trend_defaults_to_the_last_ten_runs(history_db, make_report):
    store = open_store(history_db)
    for job in range(1, 13):  # 12 runs; wrong F1 falls as wrong→correct flips grow with the job number
        store.record_run(
            make_report(job=job, cm=((40 - job, job), (3, 52)), det=(100, 4, 6), model_version="v3")
        )
    store.close()
    with serving(create_app(read_only_engine(history_db))) as url:
        for query, n in (("", 10), ("&n=3", 3), ("&n=50", 12)):
            with urllib.request.urlopen(f"{url}/trend?version=v3{query}", timeout=30) as r:
                page = r.read().decode()
            series = page.split('class="series" data-series="F1 wrong">', 1)[1].split("</g>", 1)[0]
            tips = re.findall(r"<title>F1 wrong job (\d+): ([0-9.]+)</title>", series)
            assert [int(j) for j, _ in tips] == list(range(13 - n, 13))  # the last n, oldest first
            # F1(wrong) of job j = 2·(40 − j) / ((40 − j + 3) + 40)
            assert [float(v) for _, v in tips] == [
                round(2 * (40 - j) / (83 - j), 3) for j in range(13 - n, 13)
            ]


def test_the_jobs_page_shows_the_jobs_the_queue_gave_up_on(filled):
    """Team mode: a job that kept failing shows on the jobs page with its attempts and reason (escaped:
    the reason can quote a server's answer), and leaves the page once a later run succeeded."""
    from ropewatch_validator.ops.queue_store import clear_failure, record_failure

    db, _ = filled
    store = open_store(db)
    record_failure(store, "http://cvat:8080", 42, 5, "could not validate: FetchError: HTTP 503 <b>busy</b>")
    store.close()
    engine = read_only_engine(db)
    with engine.connect() as conn:
        (row,) = queries.queue_failures(conn)
    assert (row["host"], row["job_id"], row["attempts"]) == ("http://cvat:8080", 42, 5)
    with serving(create_app(engine)) as url, urllib.request.urlopen(url + "/jobs", timeout=30) as r:
        page = r.read().decode()
    assert "the queue gave up on 1 job(s)" in page
    assert "<td>42</td><td>5</td>" in page and "HTTP 503 &lt;b&gt;busy&lt;/b&gt;" in page
    store = open_store(db)
    clear_failure(store, "http://cvat:8080", 42)
    store.close()
    with (
        serving(create_app(read_only_engine(db))) as url,
        urllib.request.urlopen(url + "/jobs", timeout=30) as r,
    ):
        assert "the queue gave up" not in r.read().decode()
