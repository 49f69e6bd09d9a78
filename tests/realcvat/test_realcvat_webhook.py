"""Validation triggered by CVAT (issue 19.4): ``ropewatch webhook register`` creates a project webhook on a
real CVAT 2.23.1, whose own webhook worker delivers ``update:job`` to ``ropewatch listen`` on loopback; a
job marked completed is queued once (a CVAT redelivery and a replayed body are not queued again), a
forged or unsigned body is refused with 401, and ``webhook drain`` validates the queued job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from ropewatch_validator.cli.main import main
from ropewatch_validator.ops.history import open_store
from ropewatch_validator.ops.loop_store import queued_jobs
from ropewatch_validator.ops.webhook_receiver import signature
from support.cvat_rest import LABELS, box, jpeg
from support.webserver import free_port

SECRET = "s3cret-for-the-test"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "ROPEWATCH_CVAT_WEBHOOK_SECRET": SECRET,
        "PYTHONPATH": f"{REPO / 'shared' / 'src'}{os.pathsep}{REPO / 'validator' / 'src'}",
    }
    db = tmp_path / "history.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ropewatch_validator", "listen", "--port", str(port), "--db", str(db)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/cvat-webhook"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.post(url, data=b"{}", timeout=2)
            break
        except requests.ConnectionError:
            time.sleep(0.2)
    yield url, db
    proc.terminate()
    proc.wait(timeout=30)


def _wait(predicate, what, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _queue(db):
    store = open_store(str(db))
    try:
        return queued_jobs(store)
    finally:
        store.close()


def test_cvat_webhook_queues_a_completed_job_once(real_cvat, receiver, tmp_path, capsys, monkeypatch):
    url, db = receiver
    rest = real_cvat.rest
    project = rest.request("POST", "/api/projects", json={"name": real_cvat.name("hook"), "labels": LABELS})
    try:
        task = rest.create_task(
            real_cvat.name("hook-task"),
            [],
            {"wh.jpg": jpeg(320, 240, 1300)},
            task_fields={"project_id": project["id"]},
        )
        job = rest.jobs(task["id"])[0]["id"]
        ids = rest.ids(task["id"])
        rest.put_annotations(
            job,
            [
                box(ids, 0, [10, 10, 60, 110], "auto", "correct"),
                box(ids, 0, [10, 10, 60, 110], "manual", "wrong"),
            ],
        )

        monkeypatch.setenv("ROPEWATCH_CVAT_WEBHOOK_SECRET", SECRET)
        auth = ["--server-host", real_cvat.url, "--auth", f"{real_cvat.user}:{real_cvat.password}"]
        assert main(["webhook", "register", "--project", str(project["id"]), "--url", url, *auth]) == 0
        out = capsys.readouterr().out
        webhook = int(out.split("webhook ")[1].split()[0])
        assert SECRET not in out
        hook = rest.get(f"/api/webhooks/{webhook}")
        assert (hook["events"], hook["type"], hook["target_url"]) == (["update:job"], "project", url)

        # a change that is not "done" is delivered and ignored; then the job is completed
        rest.request("PATCH", f"/api/jobs/{job}", json={"stage": "validation"})
        rest.request("PATCH", f"/api/jobs/{job}", json={"state": "completed"})

        def deliveries():
            found = rest.get(f"/api/webhooks/{webhook}/deliveries?page_size=50")["results"]
            return found if len(found) >= 2 else None

        delivered = sorted(_wait(deliveries, "two deliveries"), key=lambda d: d["id"])
        assert [d["status_code"] for d in delivered] == [200, 200]
        responses = [json.loads(d["response"]) for d in delivered]
        assert responses == [{"status": "ignored"}, {"status": "queued", "job": job}]
        queue = _queue(db)
        assert [(q.host, q.job_id, q.reason) for q in queue] == [(real_cvat.url, job, "state:completed")]

        # CVAT's redelivery sends the same payload (its keys reordered by jsonb): not queued again
        done = delivered[1]
        rest.request("POST", f"/api/webhooks/{webhook}/deliveries/{done['id']}/redelivery")

        def redelivered():
            found = rest.get(f"/api/webhooks/{webhook}/deliveries?page_size=50")["results"]
            return [d for d in found if d["redelivery"]] or None

        again = _wait(redelivered, "the redelivery")
        assert json.loads(again[0]["response"]) == {"status": "duplicate", "job": job}
        assert len(_queue(db)) == 1

        # hostile: a replay of the captured body and signature, a forged signature, none at all
        body = json.dumps(done["request"]).encode()
        sig = signature(SECRET.encode(), body)
        replay = requests.post(url, data=body, headers={"X-Signature-256": sig}, timeout=10)
        assert (replay.status_code, replay.json()) == (200, {"status": "duplicate", "job": job})
        forged_body = json.dumps(
            {**done["request"], "job": {**done["request"]["job"], "id": job + 1000}}
        ).encode()
        forged = requests.post(url, data=forged_body, headers={"X-Signature-256": sig}, timeout=10)
        unsigned = requests.post(url, data=forged_body, timeout=10)
        assert (forged.status_code, unsigned.status_code) == (401, 401)
        assert [q.job_id for q in _queue(db)] == [job]

        # the queued job is validated by the next drain, then leaves the queue
        out_dir = tmp_path / "reports"
        capsys.readouterr()
        drain = ["webhook", "drain", "--db", str(db), "--server-host", real_cvat.url, "--"]
        drain += [
            "--auth",
            f"{real_cvat.user}:{real_cvat.password}",
            "--out",
            str(out_dir),
            "--format",
            "json",
        ]
        code = main([*drain, "--quiet"])
        assert code == 0
        assert f"job {job} (state:completed): validate-job exit 0" in capsys.readouterr().out
        report = json.loads((out_dir / f"job-{job}" / "report.json").read_text())
        assert report["errors"]["flip_wrong_to_correct"] == 1
        assert _queue(db) == []
        # and a redelivery after the drain does not queue the validated job again
        rest.request("POST", f"/api/webhooks/{webhook}/deliveries/{done['id']}/redelivery")
        _wait(lambda: len(redelivered() or []) >= 2 or None, "the second redelivery")
        assert _queue(db) == []
    finally:
        rest.request("DELETE", f"/api/projects/{project['id']}")
