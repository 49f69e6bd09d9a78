"""The image, built from deploy/docker/Dockerfile on a real Docker engine and run as the deployment files
run it (issue 20.5): the CronJob's ``validate-job`` against the real CVAT, the dashboard's ``ropewatch
serve`` over the history that run left on the volume, and the worker Deployment's ``ropewatch worker``
on the suite's PostgreSQL.

Each container is the manifest's own (``support.deploy_files``: the image's ENTRYPOINT and the args; its
env, Secrets, volumes, user and read-only root through ``support.docker.pod_run_options``). Only the
environment's values are put in: the CVAT address and token, the project id, and the dashboard's address
(loopback: host networking) and port. ``tests/deploy/test_deploy_files.py`` checks that the systemd
units and the crontab run the same commands.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from support.cvat_rest import LABELS, box, jpeg
from support.deploy_files import DOCKERFILE, Workload, entrypoint, image_tag, k8s, with_option, workload
from support.docker import Docker, pod_run_options, shared_folder
from support.paths import REPO
from support.queue import job_counts, runs_per_job, wait_until_done
from support.webserver import free_port

WEBHOOK_SECRET = "hook-secret-of-the-test"


@pytest.fixture(scope="module")
def image(docker_engine: Docker) -> str:
    """The image, tagged as the manifests name it (the build cache lives in the engine's state)."""
    tag = image_tag()
    docker_engine("build", "--network", "host", "-f", str(DOCKERFILE), "-t", tag, str(REPO), timeout=1500)
    return tag


@dataclass(frozen=True)
class Scenario:
    project: int
    jobs: dict[int, dict]  # job id -> the counts worked out by hand below
    token: str  # the login key, sent as CVAT_ACCESS_TOKEN (Token auth on CVAT < 2.48)


@pytest.fixture(scope="module")
def scenario(real_cvat) -> Iterator[Scenario]:
    """A project with one task of two jobs (frames 0-1 and 2-3)."""
    rest = real_cvat.rest
    project = rest.request("POST", "/api/projects", json={"name": real_cvat.name("image"), "labels": LABELS})
    try:
        frames = {f"im{i}.jpg": jpeg(320, 240, 1400 + i) for i in range(4)}
        task = rest.create_task(
            real_cvat.name("image-task"),
            [],
            frames,
            task_fields={"project_id": project["id"], "segment_size": 2},
        )
        a, b = (j["id"] for j in rest.jobs(task["id"], "annotation"))
        ids = rest.ids(task["id"])
        rest.put_annotations(
            a,
            [
                # frame 0: the function agrees with the person (IoU 1): a true positive
                box(ids, 0, [10, 10, 60, 110], "manual", "wrong"),
                box(ids, 0, [10, 10, 60, 110], "auto", "wrong"),
                # frame 1: same box, the function says correct where the person says wrong: a flip
                box(ids, 1, [100, 10, 150, 110], "manual", "wrong"),
                box(ids, 1, [100, 10, 150, 110], "auto", "correct"),
            ],
        )
        rest.put_annotations(
            b,
            [
                box(ids, 2, [50, 50, 100, 150], "manual", "correct"),  # no prediction: missed
                box(ids, 3, [200, 100, 260, 200], "auto", "wrong"),  # no person there: background
            ],
        )
        key = requests.post(
            f"{real_cvat.url}/api/auth/login",
            json={"username": real_cvat.user, "password": real_cvat.password},
            timeout=30,
        ).json()["key"]
        yield Scenario(
            project["id"],
            {
                a: {"predictions": 2, "references": 2, "tp": 2, "fp": 0, "fn": 0, "flip_wrong_to_correct": 1},
                b: {
                    "predictions": 1,
                    "references": 1,
                    "tp": 0,
                    "fp": 1,
                    "fn": 1,
                    "missed": 1,
                    "background": 1,
                },
            },
            key,
        )
    finally:
        rest.request("DELETE", f"/api/projects/{project['id']}")


def _counts(report: dict) -> dict:
    """What the scenario's hand-worked numbers cover: the counts, the detection matches, and every error
    type that happened (the others are 0)."""
    counts, det = report["counts"], report["detection"]
    errors = {k: v for k, v in report["errors"].items() if v}
    return (
        {k: counts[k] for k in ("predictions", "references")}
        | {k: det[k] for k in ("tp", "fp", "fn")}
        | errors
    )


def _reports(folder: Path, jobs: dict[int, dict]) -> dict[int, dict]:
    return {j: _counts(json.loads((folder / f"job-{j}" / "report.json").read_text())) for j in jobs}


def _options(work: Workload, tmp_path: Path, claim: Path, secret: dict, cvat_url: str) -> list[str]:
    rules = k8s("cronjob.yaml")["ConfigMap"]  # rules.toml, which the CronJob and the workers mount
    return pod_run_options(
        work,
        claims={"ropewatch-history": claim},
        config_maps={rules["metadata"]["name"]: rules["data"]},
        secrets=secret,
        env={"CVAT_SERVER_HOST": cvat_url},
        scratch=tmp_path,
    )


def _cvat_secrets(scenario: Scenario) -> dict[tuple[str, str], str]:
    return {
        ("ropewatch-secrets", "cvat-access-token"): scenario.token,
        ("ropewatch-secrets", "webhook-secret"): WEBHOOK_SECRET,
    }


def _run(docker: Docker, image: str, options: list[str], argv: list[str], *flags: str, **kw):
    """``docker run`` of ``argv``, a command of the image: its ENTRYPOINT, then the arguments."""
    program = entrypoint()
    assert argv[: len(program)] == program, argv
    return docker("run", *flags, *options, image, *argv[len(program) :], **kw)


def test_the_image_has_the_worker_stack_and_no_torch(docker_engine, image):
    modules = ("procrastinate", "psycopg", "torch", "timm", "torchvision")
    probe = f"import importlib.util as u; print(*[m for m in {modules} if u.find_spec(m)])"
    done = docker_engine("run", "--rm", "--network", "host", "--entrypoint", "python", image, "-c", probe)
    assert done.stdout.split() == ["procrastinate", "psycopg"]  # the postgres extra, not the model stack


def test_the_cronjob_validates_the_project_and_the_dashboard_shows_its_history(
    docker_engine, image, scenario, real_cvat, tmp_path
):
    pvc = shared_folder(tmp_path / "pvc")
    cron = workload("cronjob.yaml")
    argv = with_option(cron.argv, "--project", str(scenario.project))
    options = _options(cron, tmp_path, pvc, _cvat_secrets(scenario), real_cvat.url)
    first = _run(docker_engine, image, options, argv, "--rm", timeout=600, check=False)
    assert first.returncode == 0, first.stderr[-3000:]
    assert _reports(pvc / "reports", scenario.jobs) == scenario.jobs
    history = pvc / "ropewatch" / "history.sqlite"  # $XDG_DATA_HOME/ropewatch on the volume
    assert runs_per_job(str(history)) == Counter(dict.fromkeys(scenario.jobs, 1))
    again = _run(docker_engine, image, options, argv, "--rm", timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert runs_per_job(str(history)) == Counter(dict.fromkeys(scenario.jobs, 1))  # --since last: unchanged

    # the dashboard Deployment over that volume (mounted read-only, read-only root), on loopback
    dash = workload("dashboard.yaml")
    port = free_port()
    argv = with_option(with_option(dash.argv, "--host", "127.0.0.1"), "--port", str(port))
    token = secrets.token_urlsafe(24)
    options = _options(dash, tmp_path, pvc, {("ropewatch-dashboard", "serve-token"): token}, real_cvat.url)
    name = f"ropewatch-serve-{uuid.uuid4().hex[:8]}"
    _run(docker_engine, image, options, argv, "-d", "--name", name)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(docker_engine, name, base + dash.container["readinessProbe"]["httpGet"]["path"])
        assert requests.get(f"{base}/jobs", timeout=30).status_code == 401  # the Secret's token guards it
        page = requests.get(f"{base}/jobs", headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert page.status_code == 200
        logs = docker_engine("logs", name).stderr
    finally:
        docker_engine("rm", "-f", name)
    assert f"at http://127.0.0.1:{port}/ (token required)" in logs
    rows = _job_rows(page.text)
    stored = _history_rows(history)
    assert sorted(rows) == sorted(stored)
    assert {job: persons for _, job, persons in rows} == {
        j: str(c["references"]) for j, c in scenario.jobs.items()
    }
    assert f"{len(stored)} runs" in page.text


def _wait_ready(docker: Docker, name: str, url: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        state = docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip()
        assert state == "true", f"{name} exited: {docker('logs', name).stderr[-2000:]}"
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready in {timeout} s")


def _job_rows(page: str) -> list[tuple[int, int, str]]:
    """(run id, job id, persons) of each row of the dashboard's jobs table."""
    rows = []
    for run_id, body in re.findall(r'<tr data-run="(\d+)">(.*?)</tr>', page, re.S):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", body, re.S)]
        rows.append(
            (int(run_id), int(cells[4]), cells[6])
        )  # recorded, version, project, task, job, frames, persons
    return rows


def _history_rows(history: Path) -> list[tuple[int, int, str]]:
    import sqlite3

    with sqlite3.connect(f"file:{history}?mode=ro", uri=True) as conn:
        return [(i, j, str(r)) for i, j, r in conn.execute('SELECT id, job_id, "references" FROM runs')]


def test_the_worker_deployment_validates_queued_jobs_once_and_stops_on_sigterm(
    docker_engine, image, scenario, real_cvat, postgres_db, tmp_path
):
    pvc = shared_folder(tmp_path / "pvc")
    work = workload("worker.yaml")
    argv = with_option(work.argv, "--project", str(scenario.project))
    secret = {**_cvat_secrets(scenario), ("ropewatch-secrets", "history-db-url"): postgres_db}
    options = _options(work, tmp_path, pvc, secret, real_cvat.url)
    queue_add = ["ropewatch", "queue", "add", "--project", str(scenario.project)]  # with the pod's env
    added = _run(docker_engine, image, options, queue_add, "--rm")
    assert added.stdout.strip() == f"queued {len(scenario.jobs)} job(s); 0 already waiting"

    first = _start_worker(docker_engine, image, options, argv)
    _wait_for(lambda: job_counts(postgres_db)["doing"] or job_counts(postgres_db)["succeeded"], 180)
    code, logs = _sigterm(docker_engine, first)
    assert code == 0, logs[-3000:]  # handled (an unhandled SIGTERM is 143, docker's later SIGKILL 137)
    # the jobs in flight finished and were stored; the others wait: nothing failed, nothing left doing
    left = job_counts(postgres_db)
    assert set(left) <= {"succeeded", "todo"} and left["succeeded"] >= 1, left
    assert runs_per_job(postgres_db) == Counter(dict.fromkeys(_succeeded_jobs(postgres_db), 1))

    second = _start_worker(docker_engine, image, options, argv)
    try:
        wait_until_done(postgres_db, len(scenario.jobs), timeout=300)
        assert runs_per_job(postgres_db) == Counter(dict.fromkeys(scenario.jobs, 1))
        # asked again once validated: queued again, and skipped (--since last): still once in history
        again = _run(docker_engine, image, options, queue_add, "--rm").stdout
        queued, waiting = map(
            int, re.fullmatch(r"queued (\d+) job\(s\); (\d+) already waiting\n", again).groups()
        )
        assert queued + waiting == len(scenario.jobs)
        counts = wait_until_done(postgres_db, 2 * len(scenario.jobs), timeout=300)
    finally:
        code, logs = _sigterm(docker_engine, second)
    assert set(counts) == {"succeeded"}
    assert runs_per_job(postgres_db) == Counter(dict.fromkeys(scenario.jobs, 1))
    assert code == 0 and '"level": "error"' not in logs, logs[-3000:]
    assert _reports(pvc / "reports", scenario.jobs) == scenario.jobs


def _start_worker(docker: Docker, image: str, options: list[str], argv: list[str]) -> str:
    name = f"ropewatch-worker-{uuid.uuid4().hex[:8]}"
    _run(docker, image, options, argv, "-d", "--name", name)
    return name


def _sigterm(docker: Docker, name: str) -> tuple[int, str]:
    """SIGTERM to the container's worker (PID 1), as Kubernetes and `docker stop` send it; its exit code
    and log once it stopped, then the container is removed."""
    try:
        docker("kill", "--signal", "TERM", name)
        code = int(docker("wait", name, timeout=120).stdout.strip())
        done = docker("logs", name)
        return code, done.stdout + done.stderr
    finally:
        docker("rm", "-f", name)


def _succeeded_jobs(db: str) -> list[int]:
    import psycopg

    with psycopg.connect(db) as conn:
        rows = conn.execute(
            "SELECT (args->>'job_id')::int FROM procrastinate_jobs "
            "WHERE task_name = 'ropewatch.validate_job' AND status = 'succeeded'"
        ).fetchall()
    return [job for (job,) in rows]


def _wait_for(condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not reached in {timeout} s"
        time.sleep(0.05)
