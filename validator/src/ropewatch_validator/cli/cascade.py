"""`ropewatch cascade tune`: choose the fast filter's band [lo, hi] on validation data and store it.

For every validation person (``val_manifest.csv`` of ``dataset build``) the filter's calibrated P and
the expert's decision are computed on the kept frame, as the function computes them (one expert pass
per frame over that frame's persons). ropewatch_core.cascade.tune_band then picks the band with the
largest share of frames that skip the expert, subject to agreement with the expert >= ``--target`` and
a recall of ``wrong`` (against the reference) no lower than the expert's. The band and its figures are
written into the filter checkpoint (validated, atomically: the function's hot-swap picks it up).
Exit codes: 0 tuned, 2 could not run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
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
    p.set_defaults(func=run)


def person_scores(filter_path: Path, expert_path: Path, data_dir: Path) -> dict:
    """Per validation person: filter P, expert decision (1 = correct), reference y and frame."""
    import numpy as np

    from ropewatch_core.image import load_frame
    from ropewatch_core.model.fast_filter import load_filter
    from ropewatch_core.model.pipeline import Predictor
    from ropewatch_validator.cli.filter_data import DataError, read_manifest

    filt, expert = load_filter(filter_path), Predictor(str(expert_path))
    rows = read_manifest(data_dir, "val")
    if any(not r.get("frame_file") for r in rows):
        raise DataError(
            f"{data_dir}/val_manifest.csv: rows without frame_file (build it with `dataset build`)"
        )
    by_frame: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_frame.setdefault(r["frame_file"], []).append(i)
    p, e = np.zeros(len(rows)), np.zeros(len(rows), dtype=bool)
    for frame_file, idx in by_frame.items():
        rgb = load_frame((Path(data_dir) / frame_file).read_bytes()).rgb
        boxes = np.array([[float(rows[i][k]) for k in ("x1", "y1", "x2", "y2")] for i in idx])
        p[idx] = filt.p_correct(rgb, boxes)[1]
        e[idx] = [v == "correct" for v in expert.classify(expert.checkpoint, rgb, boxes)[2]]
    frames = np.array([r["frame_file"] for r in rows])
    return {"p": p, "expert": e, "y": np.array([int(r["y"]) for r in rows]), "frame": frames}


def run(args: argparse.Namespace) -> int:
    from ropewatch_core.cascade import tune_band
    from ropewatch_core.image import ImageError
    from ropewatch_core.model.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
    from ropewatch_core.model.fast_filter import validate
    from ropewatch_validator.cli.filter_data import DataError

    if not 0.0 < args.target <= 1.0:
        print(f"ropewatch cascade tune: --target must be in (0, 1], got {args.target}", file=sys.stderr)
        return 2
    output = args.output or args.filter
    try:
        s = person_scores(args.filter, args.expert, args.data_dir)
        choice = tune_band(s["p"], s["expert"], s["y"], s["frame"], args.target)
        raw, _ = read_checkpoint(args.filter)
        new = {**raw, "band": [choice.lo, choice.hi], "cascade": {**choice.as_dict(), "target": args.target}}
        validate(new, str(output))
    except (CheckpointError, DataError, ImageError, OSError, ValueError) as exc:
        print(f"ropewatch cascade tune: {' '.join(str(exc).split())[:300]}", file=sys.stderr)
        return 2
    save_checkpoint(new, output)
    c = choice
    print(
        f"{output}: band [{c.lo:.4f}, {c.hi:.4f}]; "
        f"{c.frame_skip:.1%} of {c.n_frames} frames skip the expert, "
        f"{c.person_filter_share:.1%} of {c.n_persons} persons decided by the filter; agreement with the "
        f"expert {c.agreement:.2%} (target {args.target:.2%}); recall(wrong) {c.recall_wrong:.4f} "
        f"(expert {c.expert_recall_wrong:.4f})"
    )
    return 0
