"""`ropewatch annotate fill`: the model's safety_rope_use on a job's existing person boxes (app/fill.py)."""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ropewatch_core.errors import InputError, ServiceError
from ropewatch_validator.cli.validate import (
    add_connection_arguments,
    check_connection_arguments,
    connect_from_args,
)

if TYPE_CHECKING:
    from ropewatch_validator.app.fill import Classify


class FramesNotFilled(ServiceError):
    """Some frames could not be filled; the others were (counted in the summary)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("annotate", help="fill attributes on existing CVAT boxes")
    sub = p.add_subparsers(dest="annotate_command", required=True, metavar="ACTION")
    f = sub.add_parser(
        "fill",
        help="classify a job's person boxes and write only safety_rope_use back",
        description=__doc__.splitlines()[0],
    )
    f.add_argument("job_id", type=int, metavar="JOB_ID")
    how = f.add_mutually_exclusive_group(required=True)
    how.add_argument("--model", type=Path, help="checkpoint to classify with in this process (extra `model`)")
    how.add_argument("--function-url", help="the deployed function's URL: its `boxes` API classifies")
    f.add_argument("--filter", type=Path, help="fast-filter checkpoint in front of --model (the cascade)")
    f.add_argument("--device", default="cpu", help="torch device for --model (default cpu)")
    f.add_argument(
        "--records",
        type=Path,
        help="with --model: append the function's inference records here (JSON lines), for "
        "validate-job --logs (default ropewatch-fill-JOB.jsonl)",
    )
    f.add_argument(
        "--only-unset",
        action="store_true",
        help="only boxes without a value or with the label's default (CVAT stores the default for a box "
        "sent without one); otherwise every person box ropewatch has not filled before",
    )
    f.add_argument("--dry-run", action="store_true", help="count what would be filled; classify nothing")
    f.add_argument("--db", help="history store (default $ROPEWATCH_DB or ~/.local/share/ropewatch/...)")
    f.add_argument("--quiet", action="store_true", help="no progress bar")
    add_connection_arguments(f)
    f.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ropewatch_validator.app import fill as app
    from ropewatch_validator.ops.history import open_store
    from ropewatch_validator.render.progress import progress_bar

    problem = check_connection_arguments(args)
    if problem:
        raise InputError(problem)
    if args.filter and not args.model:
        raise InputError("--filter goes with --model (the deployed function has its own)")
    options = app.FillOptions(only_unset=args.only_unset, dry_run=args.dry_run)
    records = args.records or Path(f"ropewatch-fill-{args.job_id}.jsonl")
    store = open_store(args.db)
    conn = connect_from_args(args)
    try:
        writes_records = args.model and not args.dry_run
        with records.open("a", encoding="utf-8") if writes_records else nullcontext(None) as stream:
            classify = None if args.dry_run else _classifier(args, stream)
            with progress_bar(quiet=args.quiet) as bar:
                task = bar.add_task(f"job {args.job_id}: frames", total=None)
                result = app.fill(
                    conn,
                    store,
                    args.job_id,
                    classify,
                    options,
                    lambda done, total: bar.update(task, completed=done, total=total),
                )
    finally:
        store.close()
    values = ", ".join(f"{k} {v}" for k, v in sorted(result.values.items())) or "none"
    verb = "would fill" if args.dry_run else "filled"
    print(
        f"job {result.job_id}: {verb} {result.to_fill} of {result.candidates} person boxes "
        f"({result.changed} changed, {result.unchanged} already so; values: {values}); skipped: "
        f"{result.skipped_set} already set, {result.skipped_filled} filled before, "
        f"{result.skipped_tracks} tracks; failed frames {len(result.failed)}"
    )
    if args.model and not args.dry_run:
        print(f"inference records: {records}")
    if result.failed:
        frame, reason = result.failed[0]
        raise FramesNotFilled(
            f"job {result.job_id}: {len(result.failed)} frame(s) not filled (first: frame {frame}: {reason})"
        )
    return 0


def _classifier(args: argparse.Namespace, stream: TextIO | None) -> Classify:
    if args.function_url:
        from ropewatch_validator.ops.function_client import FunctionClassifier

        return FunctionClassifier(args.function_url, timeout=args.timeout, retries=args.retries)
    from ropewatch_validator.learn.fill import LocalClassifier

    assert stream is not None  # opened above whenever --model classifies
    return LocalClassifier(args.model, stream, fast_filter=args.filter, device=args.device)
