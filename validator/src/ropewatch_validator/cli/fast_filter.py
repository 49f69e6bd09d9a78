"""The fast-filter commands: `dataset build`, `train fast-filter`, `calibrate`, `evaluate`, `cascade tune`.

Each parses its arguments and calls one function of ``ropewatch_validator.learn`` (imported inside the
command function: ``ropewatch --help`` needs no torch); ``cli/main.py`` maps its errors to one line.
Exit codes: 0 done; 1 the answer is no, nothing written (`cascade tune`: no band meets the targets;
`calibrate`: the fitted T does not lower the NLL); 2 could not run (bad options, one class only, an
unusable ``last.pt``, an unreadable file). `calibrate` warns on stderr when the stored T makes the ECE
worse or sits at the search bound.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

from ropewatch_core.errors import InputError
from ropewatch_core.records import one_line
from ropewatch_validator.learn.train import DEFAULT_MODEL  # no torch at import


@contextlib.contextmanager
def _file_errors() -> Iterator[None]:
    """An OSError (a crop, frame or output that cannot be read or written) or a RuntimeError (timm
    refuses a model name) is bad input: one line, exit 2."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        raise InputError(one_line(exc)) from None


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_train(subparsers)
    _register_evaluation(subparsers)
    _register_dataset(subparsers)
    _register_cascade(subparsers)


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a model (fast-filter)")
    sub = train.add_subparsers(dest="train_command", required=True, metavar="MODEL")
    p = sub.add_parser("fast-filter", help="train the cascade's fast filter on person crops")
    p.add_argument(
        "--data-dir", type=Path, required=True, help="holds train_manifest.csv and val_manifest.csv"
    )
    p.add_argument("--model-name", default=DEFAULT_MODEL, help=f"timm model name (default {DEFAULT_MODEL})")
    p.add_argument("--weights", type=Path, default=None, help="local pretrained state dict (no hub access)")
    p.add_argument("--img-size", type=int, default=256, help="square crop side fed to the model")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    from ropewatch_validator.learn.train import TrainOptions, train

    opts = TrainOptions(
        data_dir=args.data_dir,
        output_dir=args.output_dir,
        model_name=args.model_name,
        weights=args.weights,
        img_size=args.img_size,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        resume=args.resume,
        seed=args.seed,
        workers=args.workers,
        threads=args.threads,
        quiet=args.quiet,
    )
    with _file_errors():
        best = train(opts)
    if best is None:
        print("ropewatch train fast-filter: nothing to do (all epochs done; raise --epochs)", file=sys.stderr)
        return 0
    print(f"best val AUC {best.auc:.4f} (epoch {best.epoch}): {best.path}")
    return 0


def _register_evaluation(subparsers: argparse._SubParsersAction) -> None:
    cal = subparsers.add_parser("calibrate", help="fit the fast filter's temperature on validation crops")
    cal.add_argument("filter", type=Path, metavar="FILTER.pt")
    cal.add_argument("--data-dir", type=Path, required=True)
    cal.add_argument("-o", "--output", type=Path, default=None, help="new checkpoint (default: in place)")
    cal.add_argument("--plot", type=Path, default=None, help="reliability PNG (default: beside the output)")
    cal.set_defaults(func=run_calibrate)
    ev = subparsers.add_parser(
        "evaluate", help="AUC/F1/accuracy/confusion/ECE, ROC and reliability of a filter"
    )
    ev.add_argument("filter", type=Path, metavar="FILTER.pt")
    ev.add_argument("--data-dir", type=Path, required=True)
    ev.add_argument("--split", choices=("train", "val"), default="val")
    ev.add_argument("--output-dir", type=Path, required=True)
    ev.set_defaults(func=run_evaluate)


def run_calibrate(args: argparse.Namespace) -> int:
    from ropewatch_validator.learn.evaluate import calibrate

    with _file_errors():
        done = calibrate(args.filter, args.data_dir, args.output, args.plot)
    c = done.calibration
    print(
        f"{done.output}: temperature {done.temperature:.4f} (was {done.previous_temperature:g}); "
        f"ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}; "
        f"NLL {c['nll_before']:.4f} -> {c['nll_after']:.4f} on {c['n']} validation crops; diagram {done.plot}"
    )
    for warning in done.warnings:
        print(f"ropewatch calibrate: warning: {warning}", file=sys.stderr)
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    from ropewatch_validator.learn.evaluate import evaluate_filter

    with _file_errors():
        done = evaluate_filter(args.filter, args.data_dir, args.split, args.output_dir)
    m = done.metrics
    print(
        f"{done.output_dir / 'evaluation.json'}: AUC {_f(m['auc'])}, accuracy {m['accuracy']:.4f}, "
        f"F1 wrong {_f(m['f1_wrong'])}, F1 correct {_f(m['f1_correct'])}, ECE {m['ece']:.4f} "
        f"on {m['n']} {done.split} crops (T = {done.temperature:.4f})"
    )
    return 0


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def _register_dataset(subparsers: argparse._SubParsersAction) -> None:
    from ropewatch_validator.cli.validate import add_connection_arguments

    ds = subparsers.add_parser("dataset", help="build the fast filter's crop dataset from CVAT")
    sub = ds.add_subparsers(dest="dataset_command", required=True, metavar="ACTION")
    p = sub.add_parser("build", help="crops + train/val manifests (split by task) from CVAT jobs")
    p.add_argument("job_ids", nargs="*", type=int, metavar="JOB_ID")
    p.add_argument("--task", type=int, action="append", default=[], help="all annotation jobs of a task")
    p.add_argument(
        "--project", type=int, action="append", default=[], help="all annotation jobs of a project"
    )
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--val-share", type=float, default=0.2, help="share of tasks in val (default 0.2)")
    p.add_argument(
        "--filter", type=Path, default=None, help="take the crop rule (expand) from this checkpoint"
    )
    p.add_argument("--frame-cache", type=Path, default=None, help="frame cache folder (as validate-job's)")
    add_connection_arguments(p)
    p.set_defaults(func=run_dataset)


def run_dataset(args: argparse.Namespace) -> int:
    from ropewatch_validator.cli.validate import check_connection_arguments, connect_from_args
    from ropewatch_validator.learn.dataset import DatasetOptions, build_dataset

    problem = check_connection_arguments(args)
    if problem:
        raise InputError(problem)
    opts = DatasetOptions(
        output_dir=args.output_dir,
        job_ids=tuple(args.job_ids),
        tasks=tuple(args.task),
        projects=tuple(args.project),
        val_share=args.val_share,
        filter=args.filter,
        frame_cache=args.frame_cache,
    )
    with _file_errors():
        summary = build_dataset(connect_from_args(args), opts)
    c, t, jobs = summary.info["counts"], summary.info["tasks"], summary.info["jobs"]
    print(
        f"{summary.output_dir}: {c['train']['crops']} train crops ({len(t['train'])} tasks), "
        f"{c['val']['crops']} val crops ({len(t['val'])} tasks) from {len(jobs)} jobs; "
        f"skipped {summary.skipped or 'none'}"
    )
    return 0


def _register_cascade(subparsers: argparse._SubParsersAction) -> None:
    c = subparsers.add_parser("cascade", help="the fast-filter cascade: tune its band")
    sub = c.add_subparsers(dest="cascade_command", required=True, metavar="ACTION")
    p = sub.add_parser("tune", help="choose the band [lo, hi] on validation data and store it in the filter")
    p.add_argument("filter", type=Path, metavar="FILTER.pt")
    p.add_argument("--expert", type=Path, required=True, metavar="EXPERT.pt", help="the expert checkpoint")
    p.add_argument("--data-dir", type=Path, required=True, help="a `dataset build` directory (frames kept)")
    p.add_argument(
        "--target", type=float, default=0.99, help="least agreement with the expert (default 0.99)"
    )
    p.add_argument(
        "-o", "--output", type=Path, default=None, help="new filter checkpoint (default: in place)"
    )
    p.set_defaults(func=run_cascade)


def run_cascade(args: argparse.Namespace) -> int:
    from ropewatch_validator.learn.cascade import tune

    with _file_errors():
        c = tune(args.filter, args.expert, args.data_dir, args.target, args.output)
    print(
        f"{args.output or args.filter}: band [{c.lo:.4f}, {c.hi:.4f}]; "
        f"{c.frame_skip:.1%} of {c.n_frames} frames skip the expert, "
        f"{c.person_filter_share:.1%} of {c.n_persons} persons decided by the filter; agreement with the "
        f"expert {c.agreement:.2%} (target {args.target:.2%}); recall(wrong) {c.recall_wrong:.4f} "
        f"(expert {c.expert_recall_wrong:.4f})"
    )
    return 0
