"""Benchmark: every `ropewatch serve` page on a history store holding 10,000 runs.

    .venv/bin/python bench/bench_dashboard.py [--runs 10000] [--versions 5] [--repeat 5] [--db PATH]

Six real reports are made first (validate-job on 20-frame generated jobs in the sandbox CVAT); the
store is then filled
through ``HistoryStore.record_run`` with copies of them under varied job ids, tasks, projects,
model versions and job states, one alert on every 50th run queued for two webhooks (one delivered,
one failed). Pages are fetched over real HTTP from uvicorn on loopback, after one warm-up request;
the figures are the median and the slowest of ``--repeat`` requests.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _protocol import add_arguments, finish, start

from ropewatch_validator.cli.main import main as ropewatch
from ropewatch_validator.ops.alerts.rules import AlertConfig, Rule, fired_alerts
from ropewatch_validator.ops.history import open_store
from ropewatch_validator.render.model import Report
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic
from ropewatch_validator.web.app import create_app, read_only_engine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the suite's loopback uvicorn
from support.webserver import serving

HOST = "https://cvat.example.com"
# an alert on every 50th run: a rule every report breaks
ALWAYS = AlertConfig(rules=(Rule(name="flips-per-1000", metric="counts.references", op=">=", threshold=0),))


def sample_reports(work: Path, n: int = 6) -> list[Report]:
    state = sandbox.CvatState()
    for i in range(n):
        state.add(synthetic.generate(20, job_id=500 + i, seed=i, p_flip=0.05 + 0.05 * i))
    with sandbox.serve(state) as (url, _), contextlib.redirect_stderr(io.StringIO()):
        argv = ["validate-job", *(str(500 + i) for i in range(n)), "--server-host", url, "--quiet"]
        ropewatch(
            [*argv, "--out", str(work / "reports"), "--db", str(work / "scratch.sqlite"), "--no-thumbnails"]
        )
    return [Report.load(work / "reports" / f"job-{500 + i}" / "report.json") for i in range(n)]


def fill(db: Path, runs: int, versions: int, pool: list[Report]) -> float:
    """Through ``record_run``, one transaction per run as validate-job writes them, but without an
    fsync per commit (``synchronous=OFF``: the bench's store, not a real one, and the pages read the same)."""
    import sqlalchemy as sa

    store = open_store(str(db))
    sa.event.listen(store.engine, "connect", lambda c, _: c.execute("PRAGMA synchronous=OFF"))
    store.engine.dispose()
    started = time.perf_counter()
    for i in range(runs):
        rep = pool[i % len(pool)]
        version = f"rope-2026.{1 + i * versions // runs:02d}"  # versions follow each other in time
        task, project = 1 + i % 40, 1 + i % 4
        source = rep.source.model_copy(
            update={
                "host": HOST,
                "job": 1000 + i % 2000,
                "task": task,
                "project": project,
                "job_updated_date": f"2026-{1 + i // 1000:02d}-01T00:00:{i % 60:02d}.{i:06d}Z",
            }
        )
        run = rep.model_copy(update={"source": source, "model_version": version})
        fired = fired_alerts(run, ALWAYS) if i % 50 == 49 else []
        store.record_run(run, fired, ["ops", "pager"])
    for d in store.pending():
        store.mark_delivery(d.alert_key, d.target, None if d.target == "ops" else "HTTP 503")
    store.close()
    return time.perf_counter() - started


def timed(url: str, repeat: int) -> tuple[float, float, int]:
    def once() -> tuple[float, int]:
        t = time.perf_counter()
        with urllib.request.urlopen(url, timeout=120) as r:
            size = len(r.read())
        return (time.perf_counter() - t) * 1000, size

    once()
    samples = [once() for _ in range(repeat)]
    return statistics.median(s[0] for s in samples), max(s[0] for s in samples), samples[0][1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument("--versions", type=int, default=5)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--db", type=Path, help="keep the filled store here (default: a temporary folder)")
    add_arguments(p)
    args = p.parse_args(argv)
    session = start("bench_dashboard", args)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        db = args.db or work / "history.sqlite"
        pool = sample_reports(work)
        fill_s = fill(db, args.runs, args.versions, pool)
        size_mb = db.stat().st_size / 2**20
        print(
            f"filled {args.runs:,} runs ({args.versions} model versions) in {fill_s:.1f} s; {size_mb:.0f} MiB"
        )
        version = f"rope-2026.{args.versions:02d}"
        pages = [
            ("model versions", "/"),
            ("trend (last 10 runs)", f"/trend?version={version}"),
            ("trend (last 200 runs)", f"/trend?version={version}&n=200"),
            ("version: labels + jobs", f"/version?name={version}"),
            ("jobs (all, page 1)", "/jobs"),
            ("jobs (page 100)", "/jobs?page=100"),
            ("jobs (project + task + version)", f"/jobs?project=3&task=7&version={version}"),
            ("alerts", "/alerts"),
            ("job report", f"/runs/{args.runs // 2}"),
        ]
        with serving(create_app(read_only_engine(str(db)))) as url:
            print("| page | median ms | slowest ms | KiB |")
            print("|---|---|---|---|")
            for name, path in pages:
                med, worst, size = timed(url + path, args.repeat)
                print(f"| {name} (`{path}`) | {med:.0f} | {worst:.0f} | {size / 1024:.0f} |")
    finish(session)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
