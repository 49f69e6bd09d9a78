"""Issue 4's faults through the real pipeline: sandbox CVAT, validate-job (in-process and as a killed
subprocess), a real webhook receiver. After each fault the next run completes, nothing recorded is
lost and no alert is sent twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from ropewatch_validator.cli.main import main
from ropewatch_validator.ops.history import open_store
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic

RULES = """
[[rule]]
name = "wrong-f1"
metric = "attribute.per_class.wrong.f1"
op = "<"
threshold = 0.999

[[webhook]]
name = "ops"
url = "{url}"
format = "generic"
secret_env = "HOOK_SECRET"
timeout_s = 2
retries = 0
"""


@pytest.fixture
def cvat(monkeypatch):
    monkeypatch.delenv("CVAT_ACCESS_TOKEN", raising=False)
    state = sandbox.CvatState()
    state.add(synthetic.generate(20, job_id=101, seed=1))
    state.add(synthetic.generate(20, job_id=102, task_id=12, seed=2))
    with sandbox.serve(state) as (url, st):
        yield url, st


@pytest.fixture
def setup(tmp_path, httpserver, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", "hmac-secret")
    monkeypatch.setenv("ROPEWATCH_LOCK_DIR", str(tmp_path / "locks"))
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES.format(url=httpserver.url_for("/hook")))
    return tmp_path, rules


def args(url, tmp_path, rules, *jobs):
    return [
        "validate-job",
        *jobs,
        "--server-host",
        url,
        "--retries",
        "1",
        "--out",
        str(tmp_path / "out"),
        "--db",
        str(tmp_path / "h.sqlite"),
        "--rules",
        str(rules),
        "--quiet",
        "--format",
        "json",
    ]


def delivered(httpserver) -> list[int]:
    return sorted(json.loads(req.get_data())["job"] for req, _ in httpserver.log)


def test_cvat_5xx_mid_run_then_next_run_completes(cvat, setup, httpserver):
    url, state = cvat
    tmp_path, rules = setup
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    state.fail(500, count=100, path_contains="/api/jobs/102/annotations")
    assert main(args(url, tmp_path, rules, "101", "102")) == 2  # 102 could not run: 2 wins over 1
    assert [r["job_id"] for r in open_store(str(tmp_path / "h.sqlite")).trend()] == [101]
    assert delivered(httpserver) == [101]
    state.faults.clear()
    assert main(args(url, tmp_path, rules, "101", "102")) == 1  # rule fires on 102; 101 unchanged
    assert sorted(r["job_id"] for r in open_store(str(tmp_path / "h.sqlite")).trend()) == [101, 102]
    assert delivered(httpserver) == [101, 102]  # 101's alert not sent twice


def test_webhook_down_then_outbox_delivers_once(cvat, setup, httpserver):
    url, _ = cvat
    tmp_path, rules = setup
    httpserver.expect_oneshot_request("/hook", method="POST").respond_with_data("down", status=500)
    assert main(args(url, tmp_path, rules, "101")) == 1
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    assert main(args(url, tmp_path, rules, "101")) == 1  # same state: the rule still holds; outbox flushed
    statuses = [resp.status_code for _, resp in httpserver.log]
    assert statuses == [500, 200]
    assert main(args(url, tmp_path, rules, "101")) == 1
    assert [resp.status_code for _, resp in httpserver.log] == [500, 200]  # never re-sent


def test_killed_between_two_jobs_loses_nothing(cvat, setup, httpserver):
    url, state = cvat
    tmp_path, rules = setup
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    state.fail(0, count=1, path_contains="/api/jobs/102", delay_s=30)  # job 102 hangs: kill lands there
    env = {**os.environ, "HOOK_SECRET": "hmac-secret", "ROPEWATCH_LOCK_DIR": str(tmp_path / "locks")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ropewatch_validator", *args(url, tmp_path, rules, "101", "102")], env=env
    )
    db = str(tmp_path / "h.sqlite")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not any("/api/jobs/102" in p for p in state.requests):
        time.sleep(0.1)
    assert any("/api/jobs/102" in p for p in state.requests), "the run never reached job 102"
    proc.kill()
    proc.wait(timeout=10)
    assert [r["job_id"] for r in open_store(db).trend()] == [101]
    state.faults.clear()
    assert main(args(url, tmp_path, rules, "101", "102")) == 1
    assert sorted(r["job_id"] for r in open_store(db).trend()) == [101, 102]
    assert delivered(httpserver) == [101, 102]
