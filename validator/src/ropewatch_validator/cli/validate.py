"""`validate-job` (also `ropewatch validate-job`): pull → split → match → measure → report → history → alerts.

Exit codes, for cron and CI: 0 every job validated and no alert rule fired; 1 a rule fired; 2 a job
(or the whole run) could not be validated, with a one-line reason on stderr per failure. A job still
locked by another run after waiting --job-deadline seconds was not validated: exit 2.
"""

from __future__ import annotations

import argparse
import getpass
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ropewatch_core.errors import InputError
from ropewatch_core.spec import ATTRIBUTE, ATTRIBUTE_VALUES, PERSON_LABEL
from ropewatch_validator.cli.tokens import token_problem

if TYPE_CHECKING:
    from collections.abc import Callable

    from rich.progress import Progress, TaskID

    from ropewatch_validator.app.validate import JobResult, ValidateRequest
    from ropewatch_validator.cvat.client import Connection, ConnectionSettings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "validate-job", help="validate the auto-annotation of CVAT jobs", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "job_ids", nargs="*", type=int, metavar="JOB_ID", help="job ids (or use --task / --project)"
    )
    add_validate_arguments(p)
    p.set_defaults(func=run)


def add_validate_arguments(p: argparse.ArgumentParser) -> None:
    """Every option of validate-job but its job ids: ``ropewatch worker`` takes the same ones."""
    p.add_argument("--task", type=int, help="validate every annotation job of this task")
    p.add_argument("--project", type=int, help="validate every annotation job of this project")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument(
        "--gt-job",
        metavar="ID|auto",
        help="reference = the task's Ground Truth job (its frames only); 'auto' finds it",
    )
    ref.add_argument("--reference-job", type=int, metavar="ID", help="reference = all boxes of another job")
    add_comparison_arguments(p)
    p.add_argument("--model-version", help="model version to record (default: from --logs, else unknown)")
    p.add_argument(
        "--out", type=Path, default=Path("ropewatch-reports"), help="report folder (one per job inside)"
    )
    p.add_argument("--format", default="json,md,html", help="any of json,md,html")
    p.add_argument(
        "--db",
        help="history store: SQLite path or SQLAlchemy URL (default $ROPEWATCH_DB or "
        "~/.local/share/ropewatch/history.sqlite)",
    )
    p.add_argument("--rules", type=Path, help="alert rules (TOML or YAML)")
    p.add_argument(
        "--since",
        help="only jobs updated after this ISO time, or 'last' (each job's newest stored state, per host)",
    )
    p.add_argument(
        "--job-deadline",
        type=float,
        default=1800.0,
        metavar="S",
        help="total seconds for one job's requests (default 1800); also how long to wait for a job "
        "another run holds",
    )
    p.add_argument("--force", action="store_true", help="validate even if this job state was stored before")
    p.add_argument("--quiet", action="store_true", help="no terminal summary")
    p.add_argument(
        "--no-thumbnails",
        action="store_true",
        help="report.html draws the worst frames' boxes without downloading the frames",
    )
    add_connection_arguments(p)
    add_trace_arguments(p)


def add_comparison_arguments(parser: argparse.ArgumentParser) -> None:
    """What is compared and how (``evaluation.model.Settings``)."""
    parser.add_argument(
        "--iou", type=float, default=0.5, help="IoU for a match (default 0.5; CVAT QC uses 0.4)"
    )
    parser.add_argument(
        "--matching",
        choices=("count", "cvat"),
        default="count",
        help="count: most matches at the IoU threshold (default); cvat: CVAT quality control's rule "
        "(below-threshold pairs cost 1, so total IoU is maximal)",
    )
    parser.add_argument(
        "--low-iou", type=float, default=0.1, help="IoU under which an FP is background (default 0.1)"
    )
    parser.add_argument("--label", default=PERSON_LABEL, help=f"the label compared (default {PERSON_LABEL})")
    parser.add_argument(
        "--attribute", default=ATTRIBUTE, help=f"its attribute compared (default {ATTRIBUTE})"
    )
    parser.add_argument(
        "--values",
        default=",".join(ATTRIBUTE_VALUES),
        metavar="UNSAFE,...",
        help=f"the attribute's values, the unsafe one first: its flips to another value are the dangerous "
        f"errors; with --logs exactly two, standing for the function's wrong,correct "
        f"(default {','.join(ATTRIBUTE_VALUES)})",
    )
    parser.add_argument("--pred-sources", default="auto,semi-auto", help="sources that are predictions")
    parser.add_argument("--ref-sources", default="manual,file,consensus", help="sources that are reference")


def add_trace_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--logs`` options of validate-job (``trace.section.TraceOptions``)."""
    g = parser.add_argument_group("tracing predictions to requests")
    g.add_argument(
        "--logs", nargs="+", metavar="PATH|-", help="function log files ('-' = stdin); adds report.trace"
    )
    g.add_argument("--frame-workers", type=int, default=8, help="concurrent frame downloads (default 8)")
    g.add_argument(
        "--frame-cache",
        type=Path,
        default=Path(".ropewatch/frames"),
        help="frame and fingerprint cache folder (--logs, report thumbnails)",
    )
    g.add_argument(
        "--pixel-fingerprint",
        choices=("auto", "always"),
        default="auto",
        help="decode frames for pixel_sha256: auto = unless the task's chunks are an imageset",
    )
    g.add_argument(
        "--annotated-before",
        default=None,
        help="ISO time of the job's auto-annotation (default: the job's updated_date)",
    )
    g.add_argument(
        "--required-recall-wrong",
        type=float,
        default=0.95,
        metavar="R",
        help="--logs calibration: also report the operating point with the lowest threshold whose recall of "
        "the unsafe value is at least R on the traced persons (default 0.95)",
    )


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """cvat-cli's connection options (read by :func:`connection_settings`)."""
    parser.add_argument(
        "--server-host",
        default=None,
        help="CVAT host URL, e.g. https://cvat.example.com (default env CVAT_SERVER_HOST)",
    )
    parser.add_argument(
        "--server-port", type=int, default=None, help="CVAT port (default from the URL, else 8080)"
    )
    parser.add_argument(
        "--auth",
        default=None,
        metavar="USER",
        help="basic auth user; the password comes from env PASS or a prompt (USER:PASS also works but "
        "shows the password in `ps`). Without --auth, the personal access token in env "
        "CVAT_ACCESS_TOKEN is used",
    )
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds one socket read may wait (default 60)"
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=300.0,
        help="total seconds for one request, its retries and whole body included (default 300)",
    )
    parser.add_argument(
        "--token-type",
        choices=("auto", "bearer", "token"),
        default="auto",
        help="how CVAT_ACCESS_TOKEN is sent: bearer = personal access token (CVAT >= 2.48), token = key "
        "from POST /api/auth/login (every version); auto (default) picks by the server's version",
    )
    parser.add_argument("--retries", type=int, default=5, help="retries on 429/5xx/connection errors")


def check_connection_arguments(args: argparse.Namespace) -> str | None:
    """The problem with --timeout/--deadline/--retries, in one line, or None."""
    for name in ("timeout", "deadline"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value > 0):
            return f"--{name} must be a positive number of seconds, got {value}"
    if args.retries < 0:
        return f"--retries must be 0 or more, got {args.retries}"
    return None


def server_host(args: argparse.Namespace) -> str:
    """--server-host, else $CVAT_SERVER_HOST; neither is one line with what to set, not a silent try of
    localhost:8080 that waits out its retries."""
    host = args.server_host or os.environ.get("CVAT_SERVER_HOST")
    if not host:
        raise InputError(
            "no CVAT server: give --server-host URL or set CVAT_SERVER_HOST, with --auth USER (password in "
            "env PASS) or a token in CVAT_ACCESS_TOKEN"
        )
    return str(host)


def connection_settings(args: argparse.Namespace) -> ConnectionSettings:
    """The typed connection of the cvat-cli options; the password of ``--auth USER`` comes from
    USER:PASS, env PASS or a prompt (never a traceback without a terminal: cron)."""
    from ropewatch_validator.cvat.client import ConnectionSettings

    problem = check_connection_arguments(args)
    if problem:
        raise InputError(problem)
    host = server_host(args)
    basic = None
    if args.auth:
        user, _, password = args.auth.partition(":")
        basic = (user, password or os.environ.get("PASS") or _prompt_password(user))
    return ConnectionSettings(
        host=host,
        port=args.server_port,
        basic_auth=basic,
        token=None if args.auth else os.environ.get("CVAT_ACCESS_TOKEN"),
        token_type=args.token_type,
        timeout=args.timeout,
        retries=args.retries,
        pool_size=max(16, getattr(args, "frame_workers", 0)),  # one connection per frame worker
        deadline=args.deadline,
    )


def connect_from_args(args: argparse.Namespace) -> Connection:
    """A connection to the server the cvat-cli options name (for every command that reads CVAT)."""
    from ropewatch_validator.cvat.client import connect

    return connect(connection_settings(args))


def _prompt_password(user: str) -> str:
    if not sys.stdin.isatty():
        raise InputError(f"no password for {user}: give --auth USER:PASS or env PASS (no terminal to prompt)")
    try:
        return getpass.getpass(f"password for {user}: ")
    except (EOFError, KeyboardInterrupt):
        raise InputError(f"no password for {user}") from None


def check_arguments(args: argparse.Namespace) -> str | None:
    """The first unusable option of validate-job in one line (nothing is fetched or stored), or None."""
    from ropewatch_validator.ops.schedule import parse_since
    from ropewatch_validator.render.report import FORMATS

    formats = [f for f in args.format.split(",") if f]
    if not set(formats) <= set(FORMATS):
        return f"--format takes {','.join(FORMATS)}, got {args.format}"
    if not (0.0 < args.iou <= 1.0):  # NaN fails both comparisons
        return f"--iou must be in (0, 1], got {args.iou}"
    if not (0.0 <= args.low_iou <= 1.0):
        return f"--low-iou must be in [0, 1], got {args.low_iou}"
    if not (math.isfinite(args.job_deadline) and args.job_deadline > 0):
        return f"--job-deadline must be a positive number of seconds, got {args.job_deadline}"
    if args.reference_job is not None and args.reference_job in args.job_ids:
        return (
            f"--reference-job {args.reference_job} is also a job to validate: a job is not its own reference"
        )
    values = args.values.split(",")
    if len(values) < 2 or len(set(values)) != len(values) or "" in values:
        return f"--values takes two or more distinct comma-separated values, got {args.values!r}"
    if args.logs and len(values) != 2:
        return f"--logs traces the function's two classes: --values must name two, got {args.values!r}"
    if args.gt_job is not None and args.gt_job != "auto" and not args.gt_job.isdigit():
        return f"--gt-job takes a job id or 'auto', got {args.gt_job!r}"
    try:
        parse_since(args.since)
    except ValueError as exc:
        return str(exc)
    token = None if args.auth else token_problem(os.environ.get("CVAT_ACCESS_TOKEN"), "CVAT_ACCESS_TOKEN")
    return token or check_connection_arguments(args)


def request_from_args(args: argparse.Namespace) -> ValidateRequest:
    """The typed request of one validate-job run; an InputError names the first unusable option."""
    from ropewatch_validator.app.validate import JobSelection, ValidateOptions, ValidateRequest
    from ropewatch_validator.evaluation.match import Settings
    from ropewatch_validator.trace.section import TraceOptions

    problem = check_arguments(args)
    if problem:
        raise InputError(problem)
    settings = Settings(
        iou=args.iou,
        low_iou=args.low_iou,
        label=args.label,
        attribute=args.attribute,
        values=tuple(args.values.split(",")),
        pred_sources=tuple(args.pred_sources.split(",")),
        ref_sources=tuple(args.ref_sources.split(",")),
        matching=args.matching,
    )
    trace = (
        TraceOptions(
            logs=tuple(args.logs),
            annotated_before=args.annotated_before,
            required_recall_wrong=args.required_recall_wrong,
            pixel_fingerprint=args.pixel_fingerprint,
        )
        if args.logs
        else None
    )
    options = ValidateOptions(
        settings=settings,
        gt_job=None if args.gt_job is None else "auto" if args.gt_job == "auto" else int(args.gt_job),
        reference_job=args.reference_job,
        model_version=args.model_version,
        out=args.out,
        formats=tuple(f for f in args.format.split(",") if f),
        frame_cache=args.frame_cache,
        frame_workers=args.frame_workers,
        thumbnails=not args.no_thumbnails,
        trace=trace,
        job_deadline_s=args.job_deadline,
        since=args.since,
        force=args.force,
    )
    return ValidateRequest(
        connection=connection_settings(args),
        jobs=JobSelection(tuple(args.job_ids), args.task, args.project),
        options=options,
        db=args.db,
        rules=args.rules,
    )


class TerminalObserver:
    """Progress bars on stderr; per job its warnings (always) and its summary (unless --quiet)."""

    def __init__(self, progress: Progress, jobs: TaskID, quiet: bool) -> None:
        self.progress, self.jobs, self.quiet = progress, jobs, quiet
        self.frames_bar: TaskID | None = None

    def listed(self, jobs: int) -> None:
        self.progress.update(self.jobs, total=jobs)

    def scanning(self, jobs: int) -> Callable[[int], None]:
        bar = self.progress.add_task("listed jobs: frame meta", total=jobs)
        return lambda n: self.progress.advance(bar, n)

    def phase(self, job_id: int, what: str) -> None:
        self.progress.update(self.jobs, description=f"job {job_id}: {what}")

    def frames(self, job_id: int, total: int) -> Callable[[int], None]:
        bar = self.frames_bar = self.progress.add_task(f"job {job_id}: frames", total=total)
        return lambda n: self.progress.advance(bar, n)

    def frames_done(self, job_id: int) -> None:
        if self.frames_bar is not None:
            self.progress.remove_task(self.frames_bar)
            self.frames_bar = None

    def validated(self, result: JobResult) -> None:
        from ropewatch_validator.render.report import print_summary

        report = result.report
        self.progress.advance(self.jobs)
        for warning in report.warnings:  # loud even with --quiet: a metric may be null for want of data
            print(f"validate-job: job {report.source.job}: warning: {warning}", file=sys.stderr)
        if not self.quiet:
            print_summary(report)


def run(args: argparse.Namespace) -> int:
    from ropewatch_validator.app.validate import run_validation
    from ropewatch_validator.ops.schedule import JobStatus
    from ropewatch_validator.render.progress import progress_bar

    request = request_from_args(args)
    progress = progress_bar(quiet=args.quiet, spinner=True)
    observer = TerminalObserver(progress, progress.add_task("jobs", total=None), args.quiet)
    with progress:
        result = run_validation(request, observer)
    for outcome in result.outcomes:
        if outcome.status in (JobStatus.FAILED, JobStatus.LOCKED):
            print(f"validate-job: job {outcome.job_id}: {outcome.detail}", file=sys.stderr)
        elif outcome.status in (JobStatus.OK, JobStatus.ALERT) and not args.quiet:
            folder = args.out / f"job-{outcome.job_id}"
            print("reports: " + ", ".join(str(folder / f"report.{fmt}") for fmt in request.options.formats))
        if outcome.alerts:
            print(
                f"validate-job: job {outcome.job_id}: alert rules fired: {', '.join(outcome.alerts)}",
                file=sys.stderr,
            )
    return result.exit_code
