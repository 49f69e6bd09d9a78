"""Benchmark: the cron scan with nothing to do on a real CVAT (issue 20: 502 jobs in at most 20 s).

On a real CVAT (default: the tier of ../shared/cvat-server on 127.0.0.1:18080), it makes (or reuses, by
name) a project with ``--jobs`` annotation jobs of one frame each and no annotations: one task of tiny
JPEGs with ``segment_size`` 1, so CVAT creates the jobs itself. ``validate-job --project ID --since
last`` then runs as a user's cron runs it (the venv's ``validate-job``, a subprocess, a throwaway
history database): once to fill the history, untimed, then timed as the scan that finds nothing to do,
in ``--rounds`` interleaved turns of the listing pool at 1 worker (``--frame-workers 1``, one
``data/meta`` request after another) and at ``--frame-workers`` (default 8, validate-job's default).

Per configuration: seconds per scan (the whole command, as cron sees it), jobs listed and skipped
(validate-job's own JSON log lines), and the requests the scan sent for the project's jobs, counted
in the server's request log (the tier's ``web.log``; ``--server-log`` for another server, else not
counted). Any job that the scan does not skip makes the figures meaningless: exit 1.

    .venv/bin/python bench/bench_scan.py                        # 502 jobs, 3 rounds
    .venv/bin/python bench/bench_scan.py --jobs 502 --keep      # keep the project for the next run
    .venv/bin/python bench/bench_scan.py --jobs 502 --cleanup   # only delete the project

The URL and user come from ``--url`` / ``--user``, else ``CVAT_URL`` / ``CVAT_USER``, else the tier's
``cvat.env``; the password from ``CVAT_PASSWORD``, else the tier's ``cvat.env`` (never the command line,
which ``ps`` shows). The project is deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import NoReturn
from urllib.parse import quote

from _protocol import add_arguments, finish, interleaved, ratio_line, start

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the suite's REST client and tier
from support.cvat_rest import LABELS, CvatRest, jpeg
from support.real_cvat import answers, tier_env

TARGET_JOBS, TARGET_S = 502, 20.0  # issue 20: the 502-job scan with nothing to do in at most 20 s
VALIDATE_JOB = Path(sys.executable).with_name("validate-job")  # the venv's, as a user runs it
SKIPPED = ("not-since", "unchanged")
SHOWN = ("list", "data/meta", "annotations")  # request kinds printed even at 0 (then any other kind)
REQUEST = re.compile(r'"(?:GET|POST|PUT|PATCH|DELETE|HEAD) (/api/jobs[^ "]*) HTTP')
JOB_PATH = re.compile(r"/api/jobs/(\d+)/(\w+(?:/\w+)?)")


@dataclass(frozen=True)
class Server:
    url: str
    user: str
    password: str
    log: Path | None  # the server's request log, where the scan's requests are counted


@dataclass(frozen=True)
class Project:
    id: int
    name: str
    job_ids: frozenset[int]
    made_s: float | None  # seconds to create it; None when reused


@dataclass(frozen=True)
class Scan:
    seconds: float
    exit_code: int
    listed: int
    statuses: Counter[str]
    requests: Counter[str] | None  # the project's job requests by kind, None when not counted

    @property
    def skipped(self) -> int:
        return sum(self.statuses[s] for s in SKIPPED)


def refuse(reason: str) -> NoReturn:
    """No server to measure: one line on stderr, exit 2 (as the protocol refuses a loaded machine)."""
    print(f"bench_scan: not run: {reason}", file=sys.stderr)
    raise SystemExit(2)


def server_of(args: argparse.Namespace) -> Server:
    tier = tier_env()
    url = (args.url or os.environ.get("CVAT_URL") or tier.get("CVAT_URL") or "http://127.0.0.1:18080").rstrip(
        "/"
    )
    user = args.user or os.environ.get("CVAT_USER") or tier.get("CVAT_USER") or "admin"
    password = os.environ.get("CVAT_PASSWORD") or tier.get("CVAT_PASSWORD")
    if not password:
        refuse("no password: set CVAT_PASSWORD (or start the tier: its cvat.env)")
    log = args.server_log
    if log is None and tier.get("CVAT_URL", "").rstrip("/") == url and tier.get("CVAT_SERVER_LOGS"):
        log = Path(tier["CVAT_SERVER_LOGS"]) / "web.log"  # the tier's Django request log
    return Server(url, user, password, log if log is not None and log.is_file() else None)


def paged(rest: CvatRest, path: str) -> Iterator[dict]:
    """Every result of a paged CVAT list, following ``next``."""
    url: str | None = rest.url + path
    while url:
        body = rest.session.get(url, timeout=rest.timeout)
        body.raise_for_status()
        page = body.json()
        yield from page["results"]
        url = page.get("next")


def find_project(rest: CvatRest, name: str) -> dict | None:
    hits = [p for p in paged(rest, f"/api/projects?search={quote(name)}&page_size=100") if p["name"] == name]
    return hits[0] if hits else None


def project_jobs(rest: CvatRest, project_id: int) -> frozenset[int]:
    return frozenset(
        j["id"] for j in paged(rest, f"/api/jobs?project_id={project_id}&type=annotation&page_size=500")
    )


def ensure_project(rest: CvatRest, name: str, n_jobs: int) -> Project:
    """The project called ``name`` with ``n_jobs`` one-frame jobs: reused when it has exactly those, else
    (re)made: one task of ``n_jobs`` tiny JPEGs, ``segment_size`` 1, so CVAT cuts the jobs itself."""
    found = find_project(rest, name)
    if found is not None:
        jobs = project_jobs(rest, found["id"])
        if len(jobs) == n_jobs:
            return Project(found["id"], name, jobs, None)
        rest.request("DELETE", f"/api/projects/{found['id']}")  # left half-made by an interrupted run
    t0 = time.monotonic()
    project = rest.request("POST", "/api/projects", json={"name": name, "labels": LABELS[:1]})
    files = {f"frame-{i:05d}.jpg": jpeg(16, 16, i) for i in range(n_jobs)}
    rest.create_task(
        f"{name}-task",
        [],
        files,
        task_fields={"project_id": project["id"], "segment_size": 1},
        image_quality=70,
    )
    jobs = project_jobs(rest, project["id"])
    if len(jobs) != n_jobs:
        raise SystemExit(f"bench_scan: project {project['id']} has {len(jobs)} jobs, not {n_jobs}")
    return Project(project["id"], name, jobs, time.monotonic() - t0)


def delete_project(rest: CvatRest, name: str) -> bool:
    found = find_project(rest, name)
    if found is not None:
        rest.request("DELETE", f"/api/projects/{found['id']}")
    return found is not None


def count_requests(lines: Sequence[str], project: Project) -> Counter[str]:
    """The project's job requests by kind (``data/meta``, ``annotations``, ``list``...) in log lines."""
    kinds: Counter[str] = Counter()
    for line in lines:
        m = REQUEST.search(line)
        if not m:
            continue
        path = m.group(1)
        job = JOB_PATH.match(path)
        if job and int(job.group(1)) in project.job_ids:
            kinds[job.group(2)] += 1
        elif re.search(rf"[?&]project_id={project.id}(&|$)", path):
            kinds["list"] += 1
    return kinds


@contextmanager
def log_tail(log: Path | None) -> Iterator[list[str]]:
    """The lines appended to ``log`` while the block ran (empty without a log). The server writes a line
    after its answer, so the tail is read once it stops growing."""
    lines: list[str] = []
    offset = log.stat().st_size if log else 0
    yield lines
    if log is None:
        return
    size, deadline = -1, time.monotonic() + 5
    while size != log.stat().st_size and time.monotonic() < deadline:
        size = log.stat().st_size
        time.sleep(0.3)
    with log.open("rb") as f:
        f.seek(offset)
        lines += f.read().decode("utf-8", "replace").splitlines()


def run_validate_job(
    server: Server, project: Project, work: Path, extra: Sequence[str], counted: bool = True
) -> Scan:
    """``validate-job --project ID --since last`` as cron runs it; its JSON log lines on stderr."""
    cmd = [
        str(VALIDATE_JOB),
        *("--project", str(project.id), "--since", "last", "--server-host", server.url),
        *("--auth", server.user, "--db", f"sqlite:///{work / 'history.sqlite'}", "--out", str(work / "out")),
        *extra,
    ]
    env = {**os.environ, "PASS": server.password, "ROPEWATCH_LOCK_DIR": str(work / "locks")}
    with log_tail(server.log if counted else None) as lines:
        t0 = time.perf_counter()
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
    events = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    statuses = Counter(e["status"] for e in events if e.get("event") == "job_done")
    listed = next((e["jobs"] for e in events if e.get("event") == "batch_done"), 0)
    if done.returncode not in (0, 1):
        tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
        raise SystemExit(f"bench_scan: validate-job exited {done.returncode}: {tail[0][:300]}")
    requests = count_requests(lines, project) if counted and server.log else None
    return Scan(seconds, done.returncode, listed, statuses, requests)


def per_round(values: Iterable[int]) -> str:
    """One number when every round agrees, else each round's."""
    seen = list(values)
    return str(seen[0]) if len(set(seen)) == 1 else "/".join(map(str, seen)) + " (per round)"


def requests_text(scans: Sequence[Scan]) -> str:
    if scans[0].requests is None:
        return "requests not counted (no server log; --server-log PATH)"
    total: Counter[str] = Counter(dict.fromkeys(SHOWN, 0))
    for s in scans:
        total.update(s.requests or {})
    kinds = ", ".join(f"{k} {v / len(scans):g}" for k, v in total.items())
    return f"requests per scan for the project's jobs: {kinds}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--jobs", type=int, default=TARGET_JOBS, help=f"jobs in the project (default {TARGET_JOBS})"
    )
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds (default 3)")
    parser.add_argument("--frame-workers", type=int, default=8, help="the concurrent pool (default 8)")
    parser.add_argument("--url", help="CVAT URL (default CVAT_URL, else the tier's, else 127.0.0.1:18080)")
    parser.add_argument("--user", help="CVAT user (default CVAT_USER, else the tier's)")
    parser.add_argument(
        "--server-log", type=Path, help="the server's request log (default the tier's web.log)"
    )
    parser.add_argument("--name", help="the project's name (default ropewatch-bench-scan-JOBS)")
    parser.add_argument("--keep", action="store_true", help="keep the project for the next run")
    parser.add_argument("--cleanup", action="store_true", help="only delete the project, measure nothing")
    add_arguments(parser)
    args = parser.parse_args()
    if args.jobs < 1 or args.rounds < 1 or args.frame_workers < 2:
        parser.error("--jobs and --rounds must be 1 or more, --frame-workers 2 or more")
    server = server_of(args)
    if not answers(server.url):
        refuse(f"no CVAT answers at {server.url} (--url, CVAT_URL, or start the tier)")
    rest = CvatRest(server.url, server.user, server.password)
    name = args.name or f"ropewatch-bench-scan-{args.jobs}"
    if args.cleanup:
        print(f"bench_scan: project {name!r} " + ("deleted" if delete_project(rest, name) else "not found"))
        return
    session = start("bench_scan", args)
    version = rest.get("/api/server/about")["version"]
    project = ensure_project(rest, name, args.jobs)
    made = "reused" if project.made_s is None else f"created in {project.made_s:.1f} s"
    print(
        f"CVAT {version} at {server.url}: project {project.id} {name!r}, "
        f"{len(project.job_ids)} jobs of 1 frame ({made})"
    )
    try:
        with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
            work = Path(tmp)
            fill = run_validate_job(
                server, project, work, ("--format", "json", "--no-thumbnails", "--quiet"), counted=False
            )
            print(
                f"fill: validate-job validated {fill.statuses['ok'] + fill.statuses['alert']} of "
                f"{fill.listed} jobs in {fill.seconds:.1f} s (exit {fill.exit_code}); history in a "
                "throwaway SQLite file"
            )
            configs = {
                "--frame-workers 1": ("--frame-workers", "1"),
                f"--frame-workers {args.frame_workers}": ("--frame-workers", str(args.frame_workers)),
            }
            scans = interleaved(
                {
                    label: (lambda _, extra=extra: run_validate_job(server, project, work, extra))
                    for label, extra in configs.items()
                },
                range(args.rounds),
            )
    finally:
        if not args.keep:
            delete_project(rest, name)
    print(
        f"scan with nothing to do: validate-job --project {project.id} --since last "
        f"({args.rounds} interleaved rounds)"
    )
    width = max(map(len, scans))
    for label, runs in scans.items():
        rounds = ", ".join(f"{s.seconds:.2f}" for s in runs)
        print(
            f"{label:<{width}}  median {median(s.seconds for s in runs):7.2f} s per scan (rounds {rounds}); "
            f"listed {per_round(s.listed for s in runs)}, skipped {per_round(s.skipped for s in runs)}; "
            f"{requests_text(runs)}"
        )
    print(
        ratio_line(
            "seconds per scan",
            {k: median(s.seconds for s in v) for k, v in scans.items()},
            higher_is_better=False,
        )
    )
    concurrent = median(s.seconds for s in scans[f"--frame-workers {args.frame_workers}"])
    if args.jobs == TARGET_JOBS:
        verdict = "met" if concurrent <= TARGET_S else "NOT met"
        print(f"target (issue 20): {TARGET_JOBS} jobs in <= {TARGET_S:g} s: {verdict} ({concurrent:.2f} s)")
    print(f"project {'kept' if args.keep else 'deleted'}: {name!r}")
    finish(session)
    if any(
        s.listed != args.jobs or s.skipped != s.listed or s.exit_code for runs in scans.values() for s in runs
    ):
        print(
            "bench_scan: a scan with nothing to do listed or validated jobs it should have skipped",
            file=sys.stderr,
        )
        raise SystemExit(1)


if __name__ == "__main__":
    main()
