"""The real-CVAT tier: its tests run validate-job against the session's server (the ``real_cvat``
fixture of tests/conftest.py; where the server comes from is in ``support.real_cvat``)."""

from __future__ import annotations

import json
import uuid

import pytest


@pytest.fixture
def validate(real_cvat, tmp_path):
    """Run validate-job against the real server in-process; returns (exit code, report.json of the job)."""
    from ropewatch_validator.cli.main import validate_job_main

    def run(job_id: int, *extra: str, auth: bool = True, task_only: bool = False) -> tuple[int, dict | None]:
        """``task_only``: the job is not named (it comes from ``--task`` in ``extra``)."""
        out = tmp_path / f"out-{uuid.uuid4().hex[:6]}"
        args = [
            *([] if task_only else [str(job_id)]),
            "--server-host",
            real_cvat.url,
            "--out",
            str(out),
            "--db",
            str(tmp_path / "history.sqlite"),
            "--format",
            "json",
            "--quiet",
            *extra,
        ]
        if auth:
            args += ["--auth", f"{real_cvat.user}:{real_cvat.password}"]
        code = validate_job_main(args)
        path = out / f"job-{job_id}" / "report.json"
        return code, json.loads(path.read_text()) if path.is_file() else None

    return run
