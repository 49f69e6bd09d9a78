"""Load: N validate-job processes at once on one history database (SQLite and PostgreSQL), all on
the same jobs. Reports what was lost (runs, report folders, leftovers, failed processes) and asserts
that nothing was: every job stored once, every report folder whole, every process exit 0."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import sqlalchemy as sa

from ropewatch_validator.ops.history import normalize_url
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic

PROCESSES = 4
JOBS = (101, 102, 103)
FORMATS = ["report.html", "report.json", "report.md"]


def test_concurrent_validate_job_runs_lose_nothing(history_db, tmp_path):
    state = sandbox.CvatState()
    for i, job in enumerate(JOBS):
        state.add(synthetic.generate(6, job_id=job, seed=i, extras=False))  # all of task 11
    out = tmp_path / "out"
    with sandbox.serve(state) as (url, _):
        common = [
            "--server-host",
            url,
            "--out",
            str(out),
            "--db",
            history_db,
            "--quiet",
            "--job-deadline",
            "120",
            "--no-thumbnails",
        ]
        # half the runs list the task (jobs come with updated_date), half name the jobs
        argvs = [
            ["--task", "11"] if i % 2 else [str(j) for j in (JOBS if i % 4 else reversed(JOBS))]
            for i in range(PROCESSES)
        ]
        start = time.monotonic()
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "ropewatch_validator", "validate-job", *argv, *common],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, "COLUMNS": "200"},
            )
            for argv in argvs
        ]
        results = [(p.wait(timeout=300), p.stderr.read().decode()) for p in procs]
        took = time.monotonic() - start
    engine = sa.create_engine(normalize_url(history_db))
    with engine.connect() as conn:
        stored = conn.execute(sa.text("select job_id, count(*) from runs group by job_id")).all()
    engine.dispose()
    per_job = dict(stored)
    lost = {
        "runs_missing": sorted(set(JOBS) - set(per_job)),
        "runs_duplicated": sorted(j for j, n in per_job.items() if n != 1),
        "report_folders_incomplete": sorted(
            j
            for j in JOBS
            if not (out / f"job-{j}").is_dir() or sorted(os.listdir(out / f"job-{j}")) != FORMATS
        ),
        "leftovers": sorted(p.name for p in out.iterdir() if p.name.startswith(".")),
        "failed_processes": [(code, err.strip()[-300:]) for code, err in results if code != 0],
    }
    reports = [json.loads((out / f"job-{j}" / "report.json").read_text())["source"]["job"] for j in JOBS]
    backend = history_db.split(":")[0]
    print(f"load: {PROCESSES} processes x {len(JOBS)} jobs on {backend} in {took:.1f} s; lost: {lost}")
    assert lost == {
        "runs_missing": [],
        "runs_duplicated": [],
        "report_folders_incomplete": [],
        "leftovers": [],
        "failed_processes": [],
    }
    assert reports == list(JOBS)
