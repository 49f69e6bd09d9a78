"""`ropewatch review`: open a CVAT issue for each disagreement of a validated job (see app/review.py)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

from ropewatch_core.errors import InputError, ServiceError
from ropewatch_validator.cli.validate import (
    add_connection_arguments,
    check_connection_arguments,
    connect_from_args,
)

if TYPE_CHECKING:
    from ropewatch_validator.app.review import Result


class IssuesNotOpened(ServiceError):
    """Some issues could not be opened or resolved; the others were (counted in the summary)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "review",
        help="open CVAT issues where the model and the people disagree",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--report", type=Path, help="report.json of the job (validate-job --out DIR/job-N)")
    p.add_argument("--job", type=int, help="instead of --report: the job's report.json in --out")
    p.add_argument(
        "--out", type=Path, default=Path("ropewatch-reports"), help="validate-job's --out (with --job)"
    )
    p.add_argument(
        "--validate",
        action="store_true",
        help="with --job: validate the job first (validate-job with these connection options, --db, --out "
        "and --logs), then review its fresh report",
    )
    p.add_argument("--logs", nargs="+", metavar="PATH", help="with --validate: the function's logs to trace")
    p.add_argument(
        "--types",
        help="comma-separated disagreements: flip_<label>_to_<model>, missed_<value> (default: the unsafe "
        "value's flips and its missed persons, i.e. flip_wrong_to_correct,missed_wrong)",
    )
    p.add_argument("--max", type=int, dest="max_new", help="open at most N new issues (most confident first)")
    p.add_argument("--assignee", help="CVAT username (or user id) to assign the issues to")
    p.add_argument(
        "--confident",
        type=float,
        default=0.9,
        help="P of the model's value from which the message says 'model confident: check the label' "
        "(default 0.9; needs a report traced with --logs)",
    )
    p.add_argument("--report-url", help="link to the report put in each message (default: its file path)")
    p.add_argument("--dry-run", action="store_true", help="print what would be opened and resolved; no CVAT")
    p.add_argument("--db", help="history store (default $ROPEWATCH_DB or ~/.local/share/ropewatch/...)")
    add_connection_arguments(p)
    p.set_defaults(func=run)
    sub = p.add_subparsers(dest="review_command", metavar="ACTION")
    s = sub.add_parser(
        "sample",
        help="draw a stratified sample of a task's frames and create its Ground Truth job on them",
        description="Stratified sample of a task's frames for a GT job (see docs/cvat-loop.md).",
    )
    s.add_argument("--task", type=int, required=True, help="the CVAT task")
    s.add_argument("--size", type=int, required=True, help="frames to draw")
    s.add_argument(
        "--traced", type=Path, nargs="*", default=[], metavar="REPORT",
        help="report.json files of the task's jobs validated with --logs: they decide the strata",
    )  # fmt: skip
    s.add_argument("--uncertain-share", type=float, default=0.4, help="share of frames with P near thr (0.4)")
    s.add_argument("--filter-share", type=float, default=0.2, help="share of filter-decided frames (0.2)")
    s.add_argument("--band", type=float, default=0.1, help="|P - thr| <= band is uncertain (0.1)")
    s.add_argument("--seed", type=int, help="random seed (default: fresh entropy)")
    s.add_argument("--dry-run", action="store_true", help="print the frames; create no job, store nothing")
    s.add_argument("--db", help="history store (default $ROPEWATCH_DB or ~/.local/share/ropewatch/...)")
    add_connection_arguments(s)
    s.set_defaults(func=run_sample)
    e = sub.add_parser(
        "estimate",
        help="task-level estimates (Horvitz-Thompson) from the GT job's validation",
        description="Weighted estimates for the whole task from validate-job --gt-job reports.",
    )
    e.add_argument(
        "reports", type=Path, nargs="+", metavar="REPORT", help="report.json of each job of the task"
    )
    e.add_argument("--db", help="history store holding the sample")
    e.add_argument("--format", choices=("text", "json"), default="text")
    e.set_defaults(func=run_estimate)


def run(args: argparse.Namespace) -> int:
    from ropewatch_validator.app import review as app
    from ropewatch_validator.ops.history import open_store

    problem = check_connection_arguments(args)
    if args.max_new is not None and args.max_new < 0:
        problem = f"--max must be 0 or more, got {args.max_new}"
    if not (math.isfinite(args.confident) and 0.5 <= args.confident <= 1.0):
        problem = f"--confident must be in [0.5, 1], got {args.confident}"
    if (args.report is None) == (args.job is None):
        problem = "give --report REPORT.json or --job N (or an action: sample, estimate)"
    if problem:
        raise InputError(problem)
    if args.validate and args.job is None:
        raise InputError("--validate goes with --job N")
    path = args.report or args.out / f"job-{args.job}" / "report.json"
    if args.validate:
        _validate_first(args)
    report = app.load_report(path)
    options = app.Options(
        types=tuple(t for t in args.types.split(",") if t) if args.types else None,
        max_new=args.max_new,
        assignee=args.assignee,
        confident=args.confident,
        report_url=args.report_url or str(path.resolve()),
        dry_run=args.dry_run,
    )
    store = open_store(args.db)
    try:
        conn = None if args.dry_run else connect_from_args(args)
        result = app.review(report, store, conn, options)
    finally:
        store.close()
    _print(result, report.source.job, args.dry_run)
    problems = len(result.failed) + len(result.resolve_failed)
    if problems:
        first = (result.failed or result.resolve_failed)[0][1]
        raise IssuesNotOpened(
            f"job {report.source.job}: {len(result.failed)} issue(s) not opened, "
            f"{len(result.resolve_failed)} not resolved (first: {first})"
        )
    return 0


def _validate_first(args: argparse.Namespace) -> None:
    """A fresh report of ``--job``: validate-job in this process with review's own options."""
    from ropewatch_validator.cli.main import validate_job_main
    from ropewatch_validator.cli.validate import server_host

    argv = [str(args.job), "--server-host", server_host(args), "--out", str(args.out), "--format", "json"]
    argv += ["--quiet", "--timeout", str(args.timeout), "--deadline", str(args.deadline)]
    argv += ["--retries", str(args.retries), "--token-type", args.token_type]
    argv += [*(["--server-port", str(args.server_port)] if args.server_port else [])]
    argv += [*(["--auth", args.auth] if args.auth else []), *(["--db", args.db] if args.db else [])]
    argv += [*(["--logs", *args.logs] if args.logs else [])]
    code = validate_job_main(argv)
    if code not in (0, 1):  # 1: validated, an alert rule fired
        raise IssuesNotOpened(
            f"job {args.job}: not reviewed: validate-job could not validate it (exit {code})"
        )


def _print(result: Result, job: int, dry_run: bool) -> None:
    plan = result.plan
    verb = "would open" if dry_run else "opened"
    ids = {(d.object_key, d.kind): i for d, i in result.opened}
    for d in plan.to_open:
        issue = ids.get((d.object_key, d.kind))
        where = f"issue {issue}" if issue is not None else ("-" if dry_run else "FAILED")
        p = "" if d.p_model is None else f" P={d.p_model:.3f}"
        print(f"{verb:10} {where:>12}  frame {d.frame:>5}  {d.object_key:<20} {d.kind}{p}")
    for i in plan.to_resolve:
        print(
            f"{'would resolve' if dry_run else 'resolve':10} {'issue ' + str(i.issue_id):>12}  frame "
            f"{i.frame:>5}  {i.object_key:<20} {i.disagreement} (gone)"
        )
    opened = len(plan.to_open) if dry_run else len(result.opened)
    resolved = len(plan.to_resolve) if dry_run else len(result.resolved)
    print(
        f"job {job}: {verb} {opened}, failed {len(result.failed)}, "
        f"{'would resolve' if dry_run else 'resolved'} {resolved}, already open {len(plan.kept)}, "
        f"left by --max {plan.over_max}"
    )


def run_sample(args: argparse.Namespace) -> int:
    from ropewatch_validator.app import sample as app
    from ropewatch_validator.app.review import load_report
    from ropewatch_validator.cli.validate import connect_from_args
    from ropewatch_validator.ops.history import open_store

    problem = check_connection_arguments(args)
    if problem:
        raise InputError(problem)
    design = app.Design(args.size, args.uncertain_share, args.filter_share, args.band, args.seed)
    design.check()
    reports = [load_report(p) for p in args.traced]
    store = open_store(args.db)
    try:
        result = app.sample(connect_from_args(args), store, args.task, reports, design, dry_run=args.dry_run)
    finally:
        store.close()
    for h, (big_n, n) in result.strata.items():
        print(f"{h:10} {n:>6} of {big_n:>6} frames  inclusion probability {n / big_n if big_n else 0:.4f}")
    print("frames: " + " ".join(str(f.frame) for f in result.frames))
    if result.gt_job_id is None:
        print(f"task {result.task_id}: would create a Ground Truth job on {len(result.frames)} frames")
    else:
        print(f"task {result.task_id}: Ground Truth job {result.gt_job_id} on {len(result.frames)} frames")
    return 0


def run_estimate(args: argparse.Namespace) -> int:
    import json

    from ropewatch_validator.app import sample as app
    from ropewatch_validator.app.review import load_report
    from ropewatch_validator.ops.history import open_store

    reports = [load_report(p) for p in args.reports]
    store = open_store(args.db)
    try:
        result = app.estimate(store, reports)
    finally:
        store.close()
    if args.format == "json":
        print(json.dumps(result, indent=2))
        return 0

    def show(name: str, e: dict) -> None:
        if e["value"] is None:
            print(f"{name:28} -")
            return
        ci = "" if e["se"] is None else f"  95% CI [{e['low']:.4f}, {e['high']:.4f}]  se {e['se']:.4f}"
        print(f"{name:28} {e['value']:.4f}{ci}")

    print(
        f"task {result['task']}: {result['frames_sampled']} of {result['frames_in_task']} frames sampled "
        f"(GT job {result['gt_job']}); estimates for the whole task:"
    )
    show("dangerous flips per 1,000", result["dangerous_flips_per_1000"])
    for c, m in result["per_class"].items():
        show(f"recall {c}", m["recall"])
        show(f"F1 {c}", m["f1"])
    return 0
