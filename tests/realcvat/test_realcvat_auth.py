"""Auth against a real CVAT (issue 9, items 9 and 10): basic auth, the login key as ``Token``, and a
missing password without a terminal."""

from __future__ import annotations

import os
import subprocess
import sys

import requests

from support.cvat_rest import LABELS, box, jpeg


def _job(real_cvat) -> int:
    rest = real_cvat.rest
    task = rest.create_task(real_cvat.name("auth"), LABELS, {"a0.jpg": jpeg(64, 48, 1)})
    job = rest.jobs(task["id"])[0]["id"]
    ids = rest.ids(task["id"])
    rest.put_annotations(
        job, [box(ids, 0, [1, 1, 20, 30], "auto", "wrong"), box(ids, 0, [1, 1, 20, 30], "manual", "wrong")]
    )
    return job


def test_login_key_is_sent_as_token_by_version(real_cvat, validate, monkeypatch):
    job = _job(real_cvat)
    key = requests.post(
        f"{real_cvat.url}/api/auth/login",
        timeout=30,
        json={"username": real_cvat.user, "password": real_cvat.password},
    ).json()["key"]
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", key)
    code, rep = validate(job, auth=False)  # --token-type auto: CVAT < 2.48 -> "Authorization: Token <key>"
    assert code == 0 and rep["detection"]["tp"] == 1
    code, rep = validate(job, "--token-type", "token", auth=False)
    assert code == 0
    code, rep = validate(job, "--token-type", "bearer", auth=False)  # a 2.23 server has no personal tokens
    assert code == 2 and rep is None


def test_auth_user_without_password_and_terminal_is_one_line_exit_2(real_cvat, tmp_path):
    job = _job(real_cvat)
    env = {k: v for k, v in os.environ.items() if k not in ("PASS", "CVAT_ACCESS_TOKEN")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "ropewatch_validator",
            "validate-job",
            str(job),
            "--server-host",
            real_cvat.url,
            "--auth",
            real_cvat.user,
            "--out",
            str(tmp_path / "o"),
            "--db",
            str(tmp_path / "h.sqlite"),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"validate-job: no password for {real_cvat.user}: "
        "give --auth USER:PASS or env PASS (no terminal to prompt)"
    ]
    assert "Traceback" not in done.stdout + done.stderr
