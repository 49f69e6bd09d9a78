"""Scheduled multi-job runs: exit codes, per-job isolation, locks, skips, kill between two jobs."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

from werkzeug.wrappers import Request, Response

from ropewatch_validator.ops.alerts.rules import AlertConfig, Rule, Webhook
from ropewatch_validator.ops.history import open_store
from ropewatch_validator.ops.schedule import JobRef, run_batch
from ropewatch_validator.render.model import Report

HOST = "http://cvat.local:8080"
RULES = AlertConfig(
    rules=(Rule(name="wrong-f1-low", metric="attribute.per_class.wrong.f1", op="<", threshold=0.92),)
)
GOOD, BAD = ((44, 1), (1, 54)), ((40, 5), (3, 52))  # wrong F1 0.978 (quiet) / 0.909 (fires)


class ReportDir:
    """validate_one for tests: reads report.json files written beforehand, counting calls."""

    def __init__(self, root: Path):
        self.root, self.calls = root, []
        root.mkdir(parents=True, exist_ok=True)

    def put(self, report: Report) -> JobRef:
        job = report.source.job
        (self.root / f"{job}.json").write_text(report.to_json())
        return JobRef(job, report.source.job_updated_date, report.source.host)

    def __call__(self, job_id: int) -> Report:
        self.calls.append(job_id)
        return Report.load(self.root / f"{job_id}.json")


def test_exit_codes_and_one_failing_job_does_not_stop_others(tmp_path, make_report):
    jobs = ReportDir(tmp_path / "jobs")
    store = open_store(str(tmp_path / "h.sqlite"))
    quiet = [jobs.put(make_report(job=j, cm=GOOD)) for j in (1, 2)]
    assert run_batch(quiet, jobs, store, RULES, lock_dir=tmp_path / "locks").exit_code == 0
    alerting = jobs.put(make_report(job=3, cm=BAD))
    assert run_batch([alerting], jobs, store, RULES, lock_dir=tmp_path / "locks").exit_code == 1
    result = run_batch(
        [4, jobs.put(make_report(job=5, cm=BAD))], jobs, store, RULES, lock_dir=tmp_path / "locks"
    )
    assert [(o.job_id, o.status) for o in result.outcomes] == [(4, "failed"), (5, "alert")]
    assert "FileNotFoundError" in result.outcomes[0].detail and result.exit_code == 2
    assert [r["job_id"] for r in store.trend()] == [1, 2, 3, 5]


def test_cvat_5xx_mid_run_then_next_run_completes_without_duplicates(tmp_path, httpserver, make_report):
    reports = {j: make_report(job=j, cm=BAD) for j in (1, 2, 3)}
    httpserver.expect_request("/api/jobs/1").respond_with_data(reports[1].to_json())
    httpserver.expect_oneshot_request("/api/jobs/2").respond_with_data("down", status=503)
    httpserver.expect_request("/api/jobs/3").respond_with_data(reports[3].to_json())
    receiver = "/hook"
    httpserver.expect_request(receiver, method="POST").respond_with_data("ok")

    def validate_over_http(job_id: int) -> Report:
        with urllib.request.urlopen(httpserver.url_for(f"/api/jobs/{job_id}"), timeout=5) as resp:
            return Report.model_validate_json(resp.read())

    rules = AlertConfig(RULES.rules, (Webhook(name="ops", url=httpserver.url_for(receiver)),))
    store = open_store(str(tmp_path / "h.sqlite"))
    refs = [JobRef(j, r.source.job_updated_date, HOST) for j, r in reports.items()]
    first = run_batch(refs, validate_over_http, store, rules, lock_dir=tmp_path / "locks")
    assert [o.status for o in first.outcomes] == ["alert", "failed", "alert"] and first.exit_code == 2
    assert "HTTPError" in first.outcomes[1].detail
    httpserver.expect_request("/api/jobs/2").respond_with_data(reports[2].to_json())  # CVAT is back
    second = run_batch(refs, validate_over_http, store, rules, lock_dir=tmp_path / "locks")
    assert [o.status for o in second.outcomes] == [
        "unchanged",
        "alert",
        "unchanged",
    ] and second.exit_code == 1
    posts = [req for req, _ in httpserver.log if req.path == receiver]
    assert sorted(json.loads(p.get_data())["job"] for p in posts) == [1, 2, 3]  # each alert exactly once


def test_since_and_unchanged_jobs_are_not_fetched(tmp_path, make_report):
    jobs = ReportDir(tmp_path / "jobs")
    store = open_store(str(tmp_path / "h.sqlite"))
    old = jobs.put(make_report(job=1, updated="2026-11-01T08:00:00.000000Z", cm=GOOD))
    new = jobs.put(make_report(job=2, updated="2026-11-10T08:00:00.000000Z", cm=GOOD))
    result = run_batch(
        [old, new], jobs, store, RULES, since="2026-11-05T00:00:00Z", lock_dir=tmp_path / "locks"
    )
    assert [o.status for o in result.outcomes] == ["not-since", "ok"] and jobs.calls == [2]
    # "last" is per host and job: job 1 was never stored, so it is validated now; job 2's stored
    # state is its listed one, so it is not.
    again = run_batch([old, new], jobs, store, RULES, since="last", lock_dir=tmp_path / "locks")
    assert [o.status for o in again.outcomes] == ["ok", "not-since"] and jobs.calls == [2, 1]
    assert [o.status for o in run_batch([new], jobs, store, RULES, lock_dir=tmp_path / "locks").outcomes] == [
        "unchanged"
    ]
    # The same state as cvat-sdk lists it (a datetime, host with a trailing slash) is the same state.
    listed = JobRef(2, datetime(2026, 11, 10, 9, 0, tzinfo=timezone(timedelta(hours=1))), HOST + "/")
    assert (
        run_batch([listed], jobs, store, RULES, lock_dir=tmp_path / "locks").outcomes[0].status == "unchanged"
    )
    forced = run_batch([new], jobs, store, RULES, lock_dir=tmp_path / "locks", force=True)
    assert forced.outcomes[0].detail.startswith("this job state was stored before")
    assert jobs.calls == [2, 1, 2] and len(store.trend()) == 2


def test_a_job_locked_by_another_run_is_left_to_it(tmp_path, make_report):
    jobs = ReportDir(tmp_path / "jobs")
    refs = [jobs.put(make_report(job=j, cm=GOOD)) for j in (1, 2)]
    second: list = []

    def validate_while_a_second_run_starts(job_id: int) -> Report:
        if job_id == 2:  # the first run holds job 2 now; a second cron run starts meanwhile
            store = open_store(str(tmp_path / "h.sqlite"))
            second.append(run_batch(refs, jobs, store, RULES, lock_dir=tmp_path / "locks", lock_wait_s=0.2))
            store.close()
        return jobs(job_id)

    store = open_store(str(tmp_path / "h.sqlite"))
    first = run_batch(refs, validate_while_a_second_run_starts, store, RULES, lock_dir=tmp_path / "locks")
    assert [o.status for o in first.outcomes] == ["ok", "ok"]
    # job 1 was stored by the first run (unchanged, not fetched); job 2 was left to the first run, and
    # the second run says it did not validate it (the holder may be stuck): exit 2, not 0
    assert [o.status for o in second[0].outcomes] == ["unchanged", "locked"] and second[0].exit_code == 2
    assert "not validated" in second[0].outcomes[1].detail
    assert jobs.calls == [1, 2] and len(store.trend()) == 2


def test_overlapping_runs_validate_each_job_once(tmp_path, make_report):
    jobs = ReportDir(tmp_path / "jobs")
    refs = [jobs.put(make_report(job=j, cm=GOOD)) for j in range(1, 5)]

    def slow_validate(job_id: int) -> dict:
        time.sleep(0.05)
        return jobs(job_id)

    codes = []

    def one_run() -> None:
        store = open_store(str(tmp_path / "h.sqlite"))  # both runs may create the schema at once
        codes.append(run_batch(refs, slow_validate, store, RULES, lock_dir=tmp_path / "locks").exit_code)
        store.close()

    threads = [threading.Thread(target=one_run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [0, 0]
    assert sorted(jobs.calls) == [1, 2, 3, 4]  # each job validated by exactly one of the two runs
    assert len(open_store(str(tmp_path / "h.sqlite")).trend()) == 4


KILL_BETWEEN_JOBS = textwrap.dedent(
    """
    import json, os, signal, sys
    from pathlib import Path
    from ropewatch_validator.ops.alerts.rules import AlertConfig, Rule, Webhook
    from ropewatch_validator.ops.history import open_store
    from ropewatch_validator.ops.schedule import JobRef, run_batch
    from ropewatch_validator.render.model import Report
    db, root, hook, locks = sys.argv[1:5]

    def validate_one(job_id):
        if job_id == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # killed after job 1 was stored and alerted
        return Report.load(Path(root) / f"{job_id}.json")

    refs = [JobRef(int(j), u, h) for j, u, h in json.loads(sys.argv[5])]
    rule = Rule(name="wrong-f1-low", metric="attribute.per_class.wrong.f1", op="<", threshold=0.92)
    rules = AlertConfig((rule,), (Webhook(name="ops", url=hook),))
    sys.exit(run_batch(refs, validate_one, open_store(db), rules, lock_dir=locks).exit_code)
    """
)


def test_process_killed_between_two_jobs_then_next_run_completes(
    history_db, tmp_path, httpserver, make_report
):
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    jobs = ReportDir(tmp_path / "jobs")
    refs = [jobs.put(make_report(job=j, cm=BAD)) for j in (1, 2, 3)]
    args = [
        history_db,
        str(jobs.root),
        httpserver.url_for("/hook"),
        str(tmp_path / "locks"),
        json.dumps([[r.job_id, r.updated_date, r.host] for r in refs]),
    ]
    proc = subprocess.run(
        [sys.executable, "-c", KILL_BETWEEN_JOBS, *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    store = open_store(history_db)
    assert [r["job_id"] for r in store.trend()] == [1]
    rules = AlertConfig(RULES.rules, (Webhook(name="ops", url=httpserver.url_for("/hook")),))
    result = run_batch(
        refs, jobs, store, rules, lock_dir=tmp_path / "locks"
    )  # the lock died with the process
    assert [o.status for o in result.outcomes] == ["unchanged", "alert", "alert"] and result.exit_code == 1
    assert sorted(json.loads(r.get_data())["job"] for r, _ in httpserver.log) == [1, 2, 3]
    assert [r["job_id"] for r in store.trend()] == [1, 2, 3]
    store.close()


def test_broken_history_store_fails_the_jobs_with_a_clear_reason(tmp_path, make_report):
    jobs = ReportDir(tmp_path / "jobs")
    db = tmp_path / "h.sqlite"
    store = open_store(str(db))
    ref = jobs.put(make_report(job=1, cm=GOOD))
    db.write_bytes(b"garbage " * 1000)
    store.engine.dispose()
    result = run_batch([ref], jobs, store, RULES, lock_dir=tmp_path / "locks")
    assert result.exit_code == 2 and "damaged: move it aside" in result.outcomes[0].detail
    db.unlink()
    assert run_batch([ref], jobs, open_store(str(db)), RULES, lock_dir=tmp_path / "locks").exit_code == 0


def test_unparsable_since_is_a_clear_failure(tmp_path):
    result = run_batch(
        [1],
        ReportDir(tmp_path / "j"),
        open_store(str(tmp_path / "h.sqlite")),
        RULES,
        since="not a date",
        lock_dir=tmp_path / "locks",
    )
    assert result.exit_code == 2 and "--since takes an ISO time" in result.outcomes[0].detail
    bad_ref = JobRef(1, "yesterday", HOST)
    result = run_batch(
        [bad_ref],
        ReportDir(tmp_path / "j"),
        open_store(str(tmp_path / "h.sqlite")),
        RULES,
        since="2026-11-01",
        lock_dir=tmp_path / "locks",
    )
    assert [o.status for o in result.outcomes] == ["failed"] and "'yesterday'" in result.outcomes[0].detail


def test_report_without_job_state_fails_only_that_job(tmp_path, make_report):
    jobs = ReportDir(tmp_path / "jobs")
    broken = make_report(job=1)
    broken.source.job_updated_date = None
    (jobs.root / "1.json").write_text(broken.to_json())
    ok = jobs.put(make_report(job=2, cm=GOOD))
    result = run_batch(
        [1, ok], jobs, open_store(str(tmp_path / "h.sqlite")), RULES, lock_dir=tmp_path / "locks"
    )
    assert [o.status for o in result.outcomes] == ["failed", "ok"] and result.exit_code == 2
    assert "source lacks job_updated_date" in result.outcomes[0].detail


def test_outbox_has_one_sender_at_a_time(tmp_path, httpserver, make_report):
    jobs = ReportDir(tmp_path / "jobs")
    rules = AlertConfig(RULES.rules, (Webhook(name="ops", url=httpserver.url_for("/hook")),))
    first_ref, second_ref = (jobs.put(make_report(job=j, cm=BAD)) for j in (1, 2))
    second: list = []

    def receive(request: Request) -> Response:
        if not second:  # while the first run is sending, a second run stores job 2 and its alert
            store = open_store(str(tmp_path / "h.sqlite"))
            second.append(
                run_batch([second_ref], jobs, store, rules, lock_dir=tmp_path / "locks", outbox_wait_s=0.1)
            )
            store.close()
        return Response("ok")

    httpserver.expect_request("/hook", method="POST").respond_with_handler(receive)
    store = open_store(str(tmp_path / "h.sqlite"))
    first = run_batch([first_ref], jobs, store, rules, lock_dir=tmp_path / "locks")
    assert first.delivery.sent == 1 and len(httpserver.log) == 1
    # the second run stored its job and queued its alert, but left the sending to the first run
    assert second[0].exit_code == 1 and second[0].delivery.sent == 0
    assert sorted(d["status"] for d in store.delivery_status()) == ["pending", "sent"]
    later = run_batch([second_ref], jobs, store, rules, lock_dir=tmp_path / "locks")
    assert later.outcomes[0].status == "unchanged" and later.delivery.sent == 1
    assert [json.loads(req.get_data())["job"] for req, _ in httpserver.log] == [1, 2]  # each sent once


def test_cvat_unreachable_fails_the_run_with_exit_2_and_stores_nothing(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]  # nothing listens here once the socket is closed

    def validate_over_http(job_id: int) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{dead}/api/jobs/{job_id}", timeout=2) as resp:
            return json.load(resp)

    store = open_store(str(tmp_path / "h.sqlite"))
    result = run_batch([1, 2], validate_over_http, store, RULES, lock_dir=tmp_path / "locks")
    assert [o.status for o in result.outcomes] == ["failed", "failed"] and result.exit_code == 2
    assert "URLError" in result.outcomes[0].detail and store.trend() == []


def test_since_last_revalidates_a_job_whose_frames_were_deleted_or_restored(tmp_path):
    """Issue 20: CVAT moves no date when frames are deleted or restored. `--since last` on the sandbox:
    night 1 validates job 101; its frames 2 and 5 are deleted (same updated_date): night 2 validates it
    again, night 3 does not; the frames are restored: night 4 validates it again (the report is fresh,
    the history keeps one row per job state)."""
    from ropewatch_validator.cli.main import main
    from ropewatch_validator.sandbox import server as sandbox
    from ropewatch_validator.sandbox import synthetic

    state = sandbox.CvatState()
    state.add(synthetic.generate(8))  # job 101 of task 11
    db, out = tmp_path / "h.sqlite", tmp_path / "out"

    def nightly(url):
        argv = ["validate-job", "--server-host", url, "--task", "11", "--since", "last", "--quiet"]
        assert main([*argv, "--out", str(out), "--db", str(db)]) == 0
        report = json.loads((out / "job-101" / "report.json").read_text())
        return report["counts"]["frames_deleted"], len(open_store(str(db)).trend(job=101))

    with sandbox.serve(state) as (url, served):

        def annotation_reads():
            return sum("/api/jobs/101/annotations" in p for p in served.requests)

        assert nightly(url) == (0, 1) and annotation_reads() == 1
        state.meta[101]["deleted_frames"] = [2, 5]
        assert nightly(url) == (2, 2) and annotation_reads() == 2
        assert nightly(url) == (2, 2) and annotation_reads() == 2  # unchanged: not read again
        state.meta[101]["deleted_frames"] = []
        assert nightly(url) == (0, 2) and annotation_reads() == 3
