"""`validate-job` (also `ropewatch validate-job`): pull → split → match → measure → report → history → alerts.

Exit codes, for cron and CI: 0 every job validated and no alert rule fired; 1 a rule fired; 2 a job
(or the whole run) could not be validated, with a one-line reason on stderr per failure. A job still
locked by another run after waiting --job-deadline seconds was not validated: exit 2.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ropewatch_core.errors import InputError
from ropewatch_core.spec import ATTRIBUTE, ATTRIBUTE_VALUES, PERSON_LABEL
from ropewatch_validator.cli.tokens import token_problem

if TYPE_CHECKING:
    from ropewatch_validator.cvat.fetch import Connection, JobData
    from ropewatch_validator.evaluation.match import Settings
    from ropewatch_validator.ops.schedule import JobRef
    from ropewatch_validator.render.model import Report


def register(subparsers: argparse._SubParsersAction) -> None:
    from ropewatch_validator.trace import section as trace

    p = subparsers.add_parser(
        "validate-job", help="validate the auto-annotation of CVAT jobs", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "job_ids", nargs="*", type=int, metavar="JOB_ID", help="job ids (or use --task / --project)"
    )
    p.add_argument("--task", type=int, help="validate every annotation job of this task")
    p.add_argument("--project", type=int, help="validate every annotation job of this project")
    ref = p.add_mutually_exclusive_group()
    ref.add_argument(
        "--gt-job",
        metavar="ID|auto",
        help="reference = the task's Ground Truth job (its frames only); 'auto' finds it",
    )
    ref.add_argument("--reference-job", type=int, metavar="ID", help="reference = all boxes of another job")
    p.add_argument("--iou", type=float, default=0.5, help="IoU for a match (default 0.5; CVAT QC uses 0.4)")
    p.add_argument(
        "--matching",
        choices=("count", "cvat"),
        default="count",
        help="count: most matches at the IoU threshold (default); cvat: CVAT quality control's rule "
        "(below-threshold pairs cost 1, so total IoU is maximal)",
    )
    p.add_argument(
        "--low-iou", type=float, default=0.1, help="IoU under which an FP is background (default 0.1)"
    )
    p.add_argument("--label", default=PERSON_LABEL, help=f"the label compared (default {PERSON_LABEL})")
    p.add_argument("--attribute", default=ATTRIBUTE, help=f"its attribute compared (default {ATTRIBUTE})")
    p.add_argument(
        "--values",
        default=",".join(ATTRIBUTE_VALUES),
        metavar="UNSAFE,...",
        help=f"the attribute's values, the unsafe one first: its flips to another value are the dangerous "
        f"errors; with --logs exactly two, standing for the function's wrong,correct "
        f"(default {','.join(ATTRIBUTE_VALUES)})",
    )
    p.add_argument("--pred-sources", default="auto,semi-auto", help="sources that are predictions")
    p.add_argument("--ref-sources", default="manual,file,consensus", help="sources that are reference")
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
    trace.add_arguments(p)
    p.set_defaults(func=run)


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """cvat-cli's connection options (read by ``ropewatch_validator.cvat.fetch.connect_from_args``)."""
    parser.add_argument(
        "--server-host",
        default=os.environ.get("CVAT_SERVER_HOST", "localhost"),
        help="CVAT host URL (env CVAT_SERVER_HOST; default localhost)",
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


def check_arguments(args: argparse.Namespace) -> str | None:
    """The first unusable option of validate-job in one line (nothing is fetched or stored), or None."""
    from ropewatch_validator.ops.schedule import parse_since

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


class BadReference(InputError):
    """The reference asked for cannot be a reference of this job (itself, or not its task's GT job)."""


def settings_from_args(args: argparse.Namespace) -> Settings:
    from ropewatch_validator.evaluation.match import Settings

    return Settings(
        iou=args.iou,
        low_iou=args.low_iou,
        label=args.label,
        attribute=args.attribute,
        values=tuple(args.values.split(",")),
        pred_sources=tuple(args.pred_sources.split(",")),
        ref_sources=tuple(args.ref_sources.split(",")),
        matching=args.matching,
    )


def evaluate(
    conn: Connection,
    job_id: int,
    settings: Settings,
    *,
    gt_job: str | None = None,
    reference_job: int | None = None,
    model_version: str | None = None,
) -> tuple[Report, JobData]:
    """Report dict and the fetched job (``--logs`` needs it) for one job against its reference."""
    from ropewatch_validator.cvat.fetch import FetchError, fetch_honeypots, fetch_job, find_jobs, get_json
    from ropewatch_validator.evaluation.drops import unknown_sources, value_drops
    from ropewatch_validator.evaluation.match import match, onto_job_frames, other_labels, pair_frames, select
    from ropewatch_validator.render import report as rpt

    if reference_job is not None and reference_job == job_id:
        raise BadReference(f"--reference-job {reference_job} is the job itself")
    job = fetch_job(conn, job_id)
    frames, mode, other = job.frames, "manual", None
    if gt_job is not None or reference_job is not None:
        if reference_job is not None:
            mode, other = "reference-job", reference_job
        elif gt_job == "auto":
            found = find_jobs(conn, task_id=job.task_id, job_type="ground_truth")
            if not found:
                raise FetchError(f"task {job.task_id} on {conn.host} has no Ground Truth job")
            mode, other = "gt-job", found[0]["id"]
        else:
            mode, other = "gt-job", int(str(gt_job))
        if mode == "gt-job":
            task = get_json(conn, f"task {job.task_id}", conn.api_client.tasks_api.retrieve, job.task_id)
            if task.get("validation_mode") == "gt_pool":  # honeypots show validation frames (CVAT >= 2.22)
                honeypots = fetch_honeypots(conn, job_id)
                job.frames["real_frame"] = [honeypots.get(int(f), int(f)) for f in job.frames["frame"]]
        if other == job_id:
            raise BadReference(f"--{mode} {other} is the job itself")
        ref_job = fetch_job(conn, other)
        if mode == "gt-job" and (ref_job.job_type != "ground_truth" or ref_job.task_id != job.task_id):
            raise BadReference(
                f"--gt-job {other} is not a Ground Truth job of task {job.task_id} "
                f"(it is a {ref_job.job_type} job of task {ref_job.task_id})"
            )
        pairs = pair_frames(job.frames, ref_job.frames, by_real_frame=mode == "gt-job")
        frames = job.frames[job.frames["frame"].isin(pairs["frame"])].reset_index(drop=True)
        live = pairs["frame"].to_numpy()
        pred = select(job.shapes, settings, settings.pred_sources, live)
        ref = onto_job_frames(
            select(ref_job.shapes, settings, tuple(ref_job.shapes["source"].unique())), pairs
        )
        skipped = (
            job.skipped
            + ref_job.skipped
            + other_labels(job.shapes, settings, live)
            + other_labels(ref_job.shapes, settings, pairs["ref_frame"].to_numpy())
        )
        dropped = job.dropped + ref_job.dropped
    else:
        pred = select(job.shapes, settings, settings.pred_sources)
        ref = select(job.shapes, settings, settings.ref_sources)
        skipped = job.skipped + other_labels(job.shapes, settings)
        dropped = job.dropped
    sizes = {
        int(f): (int(w), int(h)) for f, w, h in frames[["frame", "width", "height"]].itertuples(index=False)
    }
    pred, ref = match(pred, ref, settings.iou, rule=settings.matching, sizes=sizes)
    source = {
        "host": conn.host,
        "job": job_id,
        "task": job.task_id,
        "project": job.project_id,
        "job_updated_date": job.job_updated_date,
        "job_state": job.state,
        "reference_mode": mode,
        "reference_job": other,
        "server_has_score": job.has_score,
    }
    report = rpt.build(
        source=source,
        settings=settings,
        frames=frames,
        pred=pred,
        ref=ref,
        skipped=skipped,
        dropped=dropped
        + unknown_sources(job.shapes, settings)
        + value_drops(pred, settings, "prediction")
        + value_drops(ref, settings, "reference"),
        model_version=model_version,
    )
    return report, job


def _job_refs(conn: Connection, args: argparse.Namespace) -> list[JobRef]:
    from ropewatch_validator.cvat.fetch import fetch_job_state, find_jobs
    from ropewatch_validator.ops.schedule import JobRef

    refs = [JobRef(j, None, conn.host) for j in args.job_ids]  # locks are per (host, job)
    for scope in (
        {"task_id": args.task} if args.task else None,
        {"project_id": args.project} if args.project else None,
    ):
        if scope:
            # the deleted frames are part of a job's state (no date moves when they change): one meta
            # request per listed job, so an unchanged job is still skipped before its annotations are read
            refs += [
                JobRef(j["id"], j.get("updated_date"), conn.host, fetch_job_state(conn, j["id"]))
                for j in find_jobs(conn, job_type="annotation", **scope)
            ]
    return refs


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    from ropewatch_validator.cvat.fetch import FetchError, connect_from_args
    from ropewatch_validator.cvat.frames import job_frame_fetcher
    from ropewatch_validator.ops.alert import AlertConfig, ConfigError, load_config
    from ropewatch_validator.ops.history import HistoryError, model_version_of, open_store
    from ropewatch_validator.ops.schedule import run_batch
    from ropewatch_validator.render import report as rpt
    from ropewatch_validator.render.html import kpi_metrics
    from ropewatch_validator.render.thumbs import worst_frame_thumbnails

    formats = tuple(f for f in args.format.split(",") if f)
    if not set(formats) <= set(rpt.FORMATS):
        print(f"validate-job: --format takes {','.join(rpt.FORMATS)}, got {args.format}", file=sys.stderr)
        return 2
    problem = check_arguments(args)
    if problem:
        print(f"validate-job: {problem}", file=sys.stderr)
        return 2
    try:
        conn = connect_from_args(args)
        with conn.job_deadline(args.job_deadline):
            refs = _job_refs(conn, args)
        if not refs:
            print("validate-job: no jobs given (JOB_ID, --task or --project)", file=sys.stderr)
            return 2
        store = open_store(args.db)
        rules = load_config(args.rules) if args.rules else AlertConfig()
    except (FetchError, HistoryError, ConfigError, OSError) as exc:
        print(f"validate-job: {exc}", file=sys.stderr)
        return 2
    settings = settings_from_args(args)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
        disable=args.quiet or not sys.stderr.isatty(),
    )
    jobs_bar = progress.add_task("jobs", total=len(refs))

    html_extras: dict[int, tuple] = {}  # job -> (thumbnails, baseline) for its report.html, see stage()

    def one(job_id: int) -> Report:
        progress.update(jobs_bar, description=f"job {job_id}: pulling and matching")
        with conn.job_deadline(args.job_deadline):
            report, job = evaluate(
                conn,
                job_id,
                settings,
                gt_job=args.gt_job,
                reference_job=args.reference_job,
                model_version=args.model_version,
            )
            if args.logs:
                from ropewatch_validator.trace.section import enrich_report

                frames_bar = progress.add_task(
                    f"job {job_id}: frames", total=int((~job.frames["deleted"]).sum())
                )
                traced = enrich_report(
                    {"settings": report.settings.model_dump(), "model_version": report.model_version},
                    job,
                    conn,
                    args.logs,
                    cache_dir=args.frame_cache,
                    workers=args.frame_workers,
                    annotated_before=args.annotated_before,
                    required_recall_wrong=args.required_recall_wrong,
                    pixel_fingerprint=args.pixel_fingerprint,
                    progress=lambda n: progress.advance(frames_bar, n),
                )
                report = report.with_trace(traced["trace"], traced["model_version"])
                progress.remove_task(frames_bar)
            if "html" in formats:
                baseline = store.baseline(model_version_of(report), kpi_metrics(report))
                thumbnails = None
                if not args.no_thumbnails:
                    sizes = {
                        int(f): (int(w), int(h))
                        for f, w, h in job.frames[["frame", "width", "height"]].to_numpy()
                    }
                    thumbnails = worst_frame_thumbnails(
                        report.worst_frames,
                        job_frame_fetcher(conn, job, args.frame_cache),
                        sizes,
                        args.frame_workers,
                    )
                html_extras[job_id] = (thumbnails, baseline)
        progress.advance(jobs_bar)
        for warning in report.warnings:  # loud even with --quiet: a metric may be null for want of data
            print(f"validate-job: job {job_id}: warning: {warning}", file=sys.stderr)
        if not args.quiet:
            rpt.print_summary(report)
        return report

    def stage(report: Report) -> rpt.StagedReports:
        thumbnails, baseline = html_extras.pop(report.source.job, (None, None))
        return rpt.stage(
            report, args.out / f"job-{report.source.job}", formats, thumbnails=thumbnails, baseline=baseline
        )

    with progress:
        result = run_batch(
            refs,
            one,
            store,
            rules,
            since=args.since,
            force=args.force,
            lock_wait_s=args.job_deadline,
            stage=stage,
        )
    for outcome in result.outcomes:
        if outcome.status in ("failed", "locked"):
            print(f"validate-job: job {outcome.job_id}: {outcome.detail}", file=sys.stderr)
        elif outcome.status in ("ok", "alert") and not args.quiet:
            folder = args.out / f"job-{outcome.job_id}"
            print("reports: " + ", ".join(str(folder / f"report.{fmt}") for fmt in formats))
        if outcome.alerts:
            print(
                f"validate-job: job {outcome.job_id}: alert rules fired: {', '.join(outcome.alerts)}",
                file=sys.stderr,
            )
    return result.exit_code
