"""`ropewatch backtest`: model versions judged on the same reviewed persons, paired (see app/backtest).

Versions are given in order, the baseline first: positional checkpoints, then ``--checkpoint PATH``
(repeatable), each optionally followed by its own ``--thr X``, ``--filter PATH`` and ``--band LO,HI``.
Exit codes: 0 written, 2 could not run (one line on stderr; nothing half-written).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


class _Checkpoint(argparse.Action):
    """``--checkpoint PATH`` starts a new version; the per-version options after it refine it."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        namespace.versions = [*(namespace.versions or []), {"path": Path(values)}]


class _OfLast(argparse.Action):
    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None) -> None:
        if not namespace.versions:
            parser.error(f"{option_string} belongs after the --checkpoint it applies to")
        namespace.versions[-1][self.dest] = values


def register(subparsers: argparse._SubParsersAction) -> None:
    from ropewatch_validator.cli.validate import add_connection_arguments

    p = subparsers.add_parser(
        "backtest",
        help="judge checkpoints (and cascades, detectors) on the same reviewed persons, paired",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("checkpoints", nargs="*", type=Path, metavar="CHECKPOINT", help="versions, baseline first")
    p.add_argument("--checkpoint", action=_Checkpoint, dest="versions", default=[], metavar="PATH")
    p.add_argument(
        "--thr", action=_OfLast, type=float, metavar="X", help="threshold of the last --checkpoint"
    )
    p.add_argument("--filter", action=_OfLast, type=Path, metavar="PATH", help="its fast filter (a cascade)")
    p.add_argument(
        "--band", action=_OfLast, metavar="LO,HI", help="the filter's band (default: the filter's)"
    )
    p.add_argument("--job", type=int, action="append", default=[], metavar="ID", help="a CVAT job")
    p.add_argument("--task", type=int, action="append", default=[], help="every annotation job of a task")
    p.add_argument(
        "--project", type=int, action="append", default=[], help="every annotation job of a project"
    )
    p.add_argument(
        "--dataset", type=Path, metavar="DIR", help="a `ropewatch dataset build` folder instead of CVAT"
    )
    p.add_argument("--dataset-split", choices=("val", "train", "all"), default="val")
    p.add_argument(
        "--with-detector", action="append", default=[], metavar="ARCH:WEIGHTS", help="also score a detector"
    )
    p.add_argument(
        "--detector-threshold", type=float, default=0.5, help="detector score for recall/precision (0.5)"
    )
    p.add_argument(
        "--thr-from-split",
        type=float,
        metavar="FRACTION",
        help="versions without thr get the F1-best one on this share of the frames (all scored on the rest)",
    )
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--ref-sources", default="manual,file,consensus", help="sources that are reference")
    p.add_argument(
        "--frame-cache",
        type=Path,
        default=Path(".ropewatch/frames"),
        help="frame cache (shared with validate-job) and the score cache",
    )
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples of frames (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--device", default="cpu", help="torch device the models run on (default cpu; e.g. cuda)")
    p.add_argument("--out", type=Path, required=True, help="folder for backtest.json and backtest.html")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    add_connection_arguments(p)
    p.set_defaults(func=run)


def _band(text: str | None) -> tuple[float, float] | None:
    from ropewatch_core.errors import InputError

    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--band takes LO,HI, got {text!r}") from None
    if not 0.0 <= lo <= hi <= 1.0:
        raise InputError(f"--band needs 0 <= LO <= HI <= 1, got {text!r}")
    return lo, hi


def run(args: argparse.Namespace) -> int:
    from ropewatch_core.errors import InputError
    from ropewatch_validator.app.backtest import CvatScope, Request, run_backtest, write_outputs
    from ropewatch_validator.cli.validate import check_connection_arguments, connect_from_args
    from ropewatch_validator.learn.backtest import Candidate, DetectorSpec
    from ropewatch_validator.render.progress import progress_bar

    problem = check_connection_arguments(args)
    if problem:
        raise InputError(problem)
    versions = [{"path": p} for p in args.checkpoints] + list(args.versions)
    candidates = tuple(
        Candidate(v["path"], v.get("thr"), v.get("filter"), _band(v.get("band"))) for v in versions
    )
    if any(c.band is not None and c.filter_path is None for c in candidates):
        raise InputError("--band belongs to a --filter: give the filter first")
    scope = CvatScope(tuple(args.job), tuple(args.task), tuple(args.project))
    cvat = bool(args.job or args.task or args.project)
    if cvat == (args.dataset is not None):
        raise InputError("give either a CVAT scope (--job, --task, --project) or --dataset DIR")
    request = Request(
        candidates=candidates,
        scope=scope if cvat else None,
        dataset=args.dataset,
        dataset_split=args.dataset_split,
        detectors=tuple(DetectorSpec.parse(d) for d in args.with_detector),
        detector_threshold=args.detector_threshold,
        thr_from_split=args.thr_from_split,
        split_seed=args.split_seed,
        cache_dir=args.frame_cache,
        ref_sources=tuple(args.ref_sources.split(",")),
        n_boot=args.n_boot,
        seed=args.seed,
        device=args.device,
    )
    progress = progress_bar(quiet=args.quiet)

    def bar(total: int) -> Any:
        task = progress.add_task("scoring frames", total=total)
        return lambda n: progress.advance(task, n)

    with progress:
        done = run_backtest(request, connect_from_args(args) if cvat else None, bar)
    json_path, html_path = write_outputs(done, args.out)
    result = done.result
    if not args.quiet:
        for v in result.versions:
            m = v.metrics
            print(
                f"{v.version}: thr {v.thr:.4g} ({v.thr_source}), AP {_num(m.ap)}, "
                f"accuracy {_num(m.accuracy)}, flips/1000 {_num(m.flips_per_1000, 1)}"
            )
        for pair in result.pairs:
            print(f"{pair.b} vs {pair.a}: McNemar p {pair.mcnemar_p:.4g}")
        skipped = ", ".join(f"{k} {v}" for k, v in result.data.skipped.items()) or "none"
        print(f"{result.data.n_persons} persons on {result.data.n_frames} frames; skipped: {skipped}")
        print(f"wrote {json_path} and {html_path}")
    return 0


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
