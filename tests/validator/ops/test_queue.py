"""Team mode (issue 20) on a real PostgreSQL: ``ropewatch worker`` processes as the hosts, the sandbox CVAT
as the server. Every job is validated exactly once however many workers and requests there are; a worker
killed mid-job loses nothing; a CVAT that fails for a while is retried; one that keeps failing ends
failed with its reason in ``ropewatch queue status``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from ropewatch_validator.cli.main import main
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic
from support.queue import job_counts, runs_per_job, wait_until_done
from support.webserver import serving

pytestmark = pytest.mark.postgres


def _cvat(n_jobs: int, frames: int = 3) -> sandbox.CvatState:
    state = sandbox.CvatState()
    for i in range(n_jobs):
        state.add(synthetic.generate(frames, job_id=1000 + i, seed=i, extras=False))
    return state


def _worker(url: str, db: str, tmp_path, *extra: str) -> subprocess.Popen:
    log = open(tmp_path / f"worker-{uuid.uuid4().hex[:6]}.log", "w")  # noqa: SIM115 - lives with the process
    return subprocess.Popen(
        [sys.executable, "-m", "ropewatch_validator", "worker", "--server-host", url, "--db", db]
        + ["--out", str(tmp_path / "out"), "--format", "json", "--no-thumbnails", "--job-deadline", "60"]
        + ["--retry-backoff", "1", "--stalled-after", "3", *extra],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "ROPEWATCH_LOCK_DIR": str(tmp_path / "locks")},
    )


def _stop(workers: list[subprocess.Popen]) -> list[int]:
    for w in workers:
        w.send_signal(signal.SIGTERM)
    return [w.wait(timeout=60) for w in workers]


def _queue(url: str, db: str, *jobs: str) -> None:
    assert main(["queue", "add", *jobs, "--server-host", url, "--db", db]) == 0


RULES = """
[[rule]]
name = "every-job"
metric = "counts.references"
op = ">="
threshold = 0

[[webhook]]
name = "ops"
url = "{url}"
timeout_s = 5
retries = 1
"""


@contextmanager
def receiver() -> Iterator[tuple[str, Counter]]:
    """A webhook receiver that counts deliveries by Idempotency-Key."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    keys: Counter = Counter()

    async def hook(request):
        keys[request.headers.get("idempotency-key")] += 1
        return PlainTextResponse("ok")

    with serving(Starlette(routes=[Route("/hook", hook, methods=["POST"])])) as base:
        yield f"{base}/hook", keys


def test_three_workers_validate_every_job_exactly_once(postgres_db, tmp_path, capsys):
    n = 300
    with sandbox.serve(_cvat(n, frames=2)) as (url, _), receiver() as (hook, keys):
        rules = tmp_path / "rules.toml"
        rules.write_text(RULES.format(url=hook))
        _queue(url, postgres_db, "--task", "11")
        first = capsys.readouterr().out
        _queue(url, postgres_db, "--task", "11")  # asked twice while waiting: queued once
        second = capsys.readouterr().out
        assert first.strip() == f"queued {n} job(s); 0 already waiting"
        assert second.strip() == f"queued 0 job(s); {n} already waiting"
        workers = [_worker(url, postgres_db, tmp_path, "--rules", str(rules)) for _ in range(3)]
        try:
            counts = wait_until_done(postgres_db, n, timeout=900)
        finally:
            codes = _stop(workers)
    assert codes == [0, 0, 0]  # SIGTERM: each finished its job in flight and stopped cleanly
    for log in tmp_path.glob("worker-*.log"):  # and said so, in the one log format
        events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
        stops = [e for e in events if e["event"].startswith("Stopped worker")]
        assert [(e["logger"], e["level"]) for e in stops] == [("procrastinate.worker.worker", "info")]
    assert counts == Counter({"succeeded": n})
    runs = runs_per_job(postgres_db)
    assert sorted(runs) == [1000 + i for i in range(n)] and set(runs.values()) == {1}
    assert len(list((tmp_path / "out").glob("job-*/report.json"))) == n
    assert len(keys) == n and set(keys.values()) == {1}  # one alert per job, each delivered once
    assert main(["queue", "status", "--db", postgres_db, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["counts"] == {"succeeded": n} and status["failed"] == []


def test_a_worker_killed_mid_job_loses_nothing(postgres_db, tmp_path):
    """kill -9 while the job's annotations are stalled: the job stays ``doing`` with a dead worker; a
    worker started later hands it back (stalled: no heartbeat for --stalled-after) and validates it once."""
    state = _cvat(1)
    state.fail(0, path_contains="/api/jobs/1000/annotations", delay_s=30.0)  # the first read hangs
    with sandbox.serve(state) as (url, st):
        _queue(url, postgres_db, "1000")
        first = _worker(url, postgres_db, tmp_path)
        deadline = time.monotonic() + 120
        while not any("/api/jobs/1000/annotations" in r for r in st.requests) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert job_counts(postgres_db)["doing"] == 1
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
        time.sleep(4)  # longer than --stalled-after 3: its heartbeat is stale
        second = _worker(url, postgres_db, tmp_path)
        try:
            counts = wait_until_done(postgres_db, 1, timeout=300)
        finally:
            _stop([second])
    assert counts == Counter({"succeeded": 1})
    assert runs_per_job(postgres_db) == Counter({1000: 1})


def test_cvat_down_for_a_while_is_retried_then_one_that_stays_down_ends_failed(postgres_db, tmp_path, capsys):
    state = _cvat(2)
    # job 1000: its annotations fail long enough to fail two attempts, then answer
    state.fail(503, count=8, path_contains="/api/jobs/1000/annotations")
    # job 1001: never answers
    state.fail(503, count=10_000, path_contains="/api/jobs/1001/annotations")
    with sandbox.serve(state) as (url, _):
        _queue(url, postgres_db, "1000", "1001")
        worker = _worker(url, postgres_db, tmp_path, "--attempts", "3", "--deadline", "5")
        try:
            counts = wait_until_done(postgres_db, 2, timeout=600)
        finally:
            _stop([worker])
    assert counts == Counter({"succeeded": 1, "failed": 1})
    assert runs_per_job(postgres_db) == Counter({1000: 1})
    capsys.readouterr()
    assert main(["queue", "status", "--db", postgres_db]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "validation queue: failed 1, succeeded 1; retried and not failed: 1"
    (failed,) = lines[1:]
    assert failed.startswith(f"failed: {url} job 1001 after 3 attempts: could not validate: FetchError: ")


def _update(job_id: int, url: str, state: str = "completed") -> bytes:
    payload = {
        "event": "update:job",
        "job": {"id": job_id, "url": f"{url}/api/jobs/{job_id}", "state": state, "stage": "annotation"},
        "before_update": {"state": "in progress"},
        "webhook_id": 1,
    }
    return json.dumps(payload).encode()


def test_the_webhook_receiver_hands_finished_jobs_to_the_workers(postgres_db):
    """Team mode: ``ropewatch listen`` on the team's PostgreSQL defers each finished job as a
    validate_job task at once, queued once however often CVAT delivers or people re-finish it."""
    from starlette.testclient import TestClient

    from ropewatch_validator.cli.webhook import _handoff
    from ropewatch_validator.ops.history import open_store
    from ropewatch_validator.ops.webhook_receiver import SIGNATURE_HEADER, make_app, signature

    store = open_store(postgres_db)
    handoff = _handoff(store)
    assert handoff is not None
    url = "http://cvat.example:8080"
    with TestClient(make_app(store, b"s3cret", handoff=handoff)) as client:

        def post(body: bytes) -> str:
            answer = client.post(
                "/cvat-webhook", content=body, headers={SIGNATURE_HEADER: signature(b"s3cret", body)}
            )
            assert answer.status_code == 200
            return answer.json()["status"]

        assert post(_update(7, url)) == "queued"
        assert post(_update(7, url)) == "duplicate"  # a redelivery: nothing new
        assert post(_update(7, url, state="completed") + b" ") == "duplicate"  # same JSON, other bytes
        assert post(_update(8, url)) == "queued"
    store.close()
    with psycopg.connect(postgres_db) as conn:
        rows = conn.execute(
            "SELECT queueing_lock, args->>'job_id', status::text FROM procrastinate_jobs "
            "WHERE task_name = 'ropewatch.validate_job' ORDER BY id"
        ).fetchall()
    assert rows == [(f"{url}#job-7", "7", "todo"), (f"{url}#job-8", "8", "todo")]


def test_a_postgresql_restart_mid_run_loses_nothing(tmp_path):
    """The team's database goes away while workers run (an immediate stop cuts every connection), then
    comes back. procrastinate stops a worker whose LISTEN connection died; its supervisor starts it again
    (systemd ``Restart=always``, a Deployment's pod restart), emulated here. Every job is still
    validated exactly once: jobs cut mid-store were kept ``doing`` and are handed back as stalled."""
    from support.postgres import Cluster

    cluster = Cluster()
    cluster.start()
    try:
        with psycopg.connect(f"{cluster.url}/postgres", autocommit=True) as conn:
            conn.execute('CREATE DATABASE "q"')
        db = f"{cluster.url}/q"
        n = 40
        with sandbox.serve(_cvat(n, frames=2)) as (url, _):
            assert main(["queue", "add", "--task", "11", "--server-host", url, "--db", db]) == 0
            workers = [_worker(url, db, tmp_path) for _ in range(2)]
            deadline = time.monotonic() + 300
            while job_counts(db)["succeeded"] < n // 4 and time.monotonic() < deadline:
                time.sleep(0.2)
            cluster.stop()  # mid-run: jobs in flight lose their connection
            time.sleep(3)
            cluster.start()
            restarts = 0
            deadline = time.monotonic() + 600
            try:
                while time.monotonic() < deadline:
                    counts = job_counts(db)
                    if counts["succeeded"] >= n and not counts["todo"] and not counts["doing"]:
                        break
                    for i, w in enumerate(workers):
                        if w.poll() is not None:  # the supervisor's restart
                            workers[i], restarts = _worker(url, db, tmp_path), restarts + 1
                    time.sleep(0.5)
            finally:
                _stop(workers)
        assert counts == Counter({"succeeded": n}), dict(counts)
        assert restarts >= 1  # the lost database did stop workers: this is what the test is about
        runs = runs_per_job(db)
        assert sorted(runs) == [1000 + i for i in range(n)] and set(runs.values()) == {1}
    finally:
        cluster.stop()
        cluster.remove()
