"""`ropewatch calibrate` and `ropewatch evaluate`: temperature scaling and the report of a fast filter.

calibrate: scores the validation crops, fits T by minimizing the NLL of σ(z/T) (scipy, the validator's
``trace.calibration.fit_temperature``), stores T and a ``calibration`` block in the filter checkpoint
(atomically; the function's hot-swap picks it up) and draws the reliability diagram before and after.

evaluate: AUC, F1, accuracy, the confusion matrix and ECE of the (calibrated) filter on a split, a ROC
curve and the reliability diagram as PNG, and one ``evaluation.json`` plus one ``evaluation.html``.
Exit codes: 0 done, 2 could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
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


def _scores(filter_path: Path, data_dir: Path, split: str) -> tuple[dict, Any, np.ndarray, np.ndarray]:
    """The raw checkpoint dict, the loaded filter, logits and labels of ``split``."""
    from ropewatch_core.model.checkpoint import read_checkpoint
    from ropewatch_core.model.fast_filter import load_filter
    from ropewatch_validator.cli import filter_data as fd

    filt = load_filter(filter_path)
    raw, _ = read_checkpoint(filter_path)
    rows = fd.read_manifest(data_dir, split)
    return raw, filt, fd.score(filt.model, data_dir, rows, filt.img_size), fd.labels(rows)


def reliability_png(curves: list[tuple[str, dict]], path: Path) -> None:
    """Top-label reliability diagram: one line per (name, trace.calibration.reliability(...))."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    for name, rel in curves:
        used = rel["count"] > 0
        ax.plot(rel["confidence"][used], rel["accuracy"][used], marker="o", ms=3, label=name)
    ax.set(xlabel="confidence (top-label)", ylabel="accuracy", xlim=(0.45, 1.01), ylim=(0, 1.02))
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def run_calibrate(args: argparse.Namespace) -> int:
    from ropewatch_core.model.checkpoint import CheckpointError, save_checkpoint
    from ropewatch_core.model.fast_filter import validate
    from ropewatch_validator.cli.filter_data import DataError
    from ropewatch_validator.trace import calibration as cal

    output = args.output or args.filter
    try:
        raw, filt, z, y = _scores(args.filter, args.data_dir, "val")
        t_old = filt.temperature
        t_new = cal.fit_temperature(z, y)
        p_old, p_new = cal.probability(z, t_old), cal.probability(z, t_new)
        new = dict(raw)
        new["temperature"] = t_new
        new["version"] = f"{filt.version}+cal{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
        new["calibration"] = {
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "data": str(args.data_dir),
            "n": int(y.size),
            "previous_temperature": t_old,
            "ece_before": cal.ece(p_old, y),
            "ece_after": cal.ece(p_new, y),
            "nll_before": cal.nll(z, y, t_old),
            "nll_after": cal.nll(z, y, t_new),
        }
        validate(new, str(output))  # never write a file the function would refuse
    except (CheckpointError, DataError, OSError, ValueError) as exc:
        print(f"ropewatch calibrate: {exc}", file=sys.stderr)
        return 2
    save_checkpoint(new, output)
    plot = args.plot or Path(output).with_suffix(".reliability.png")
    reliability_png(
        [
            (f"T = {t_old:.3f}, ECE {new['calibration']['ece_before']:.4f}", cal.reliability(p_old, y)),
            (f"T = {t_new:.3f}, ECE {new['calibration']['ece_after']:.4f}", cal.reliability(p_new, y)),
        ],
        plot,
    )
    c = new["calibration"]
    print(
        f"{output}: temperature {t_new:.4f} (was {t_old:g}); "
        f"ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f}; "
        f"NLL {c['nll_before']:.4f} -> {c['nll_after']:.4f} on {c['n']} validation crops; diagram {plot}"
    )
    return 0


def roc_png(fpr: np.ndarray, tpr: np.ndarray, auc: float | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.plot(fpr, tpr, drawstyle="steps-post", label=f"AUC {auc:.4f}" if auc is not None else "AUC n/a")
    ax.set(xlabel="false positive rate (wrong called correct)", ylabel="true positive rate (correct)")
    ax.set(xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def run_evaluate(args: argparse.Namespace) -> int:
    import base64

    from ropewatch_core.files import atomic_write
    from ropewatch_core.jsonio import plain
    from ropewatch_core.model.checkpoint import CheckpointError
    from ropewatch_core.model.fast_filter import describe
    from ropewatch_validator.cli import filter_data as fd
    from ropewatch_validator.evaluation.metrics import roc_curve
    from ropewatch_validator.render.html import render
    from ropewatch_validator.trace import calibration as cal

    try:
        _, filt, z, y = _scores(args.filter, args.data_dir, args.split)
        out = Path(args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
    except (CheckpointError, fd.DataError, OSError, ValueError) as exc:
        print(f"ropewatch evaluate: {exc}", file=sys.stderr)
        return 2
    m = fd.metrics(z, y, filt.temperature)
    p = cal.probability(z, filt.temperature)
    roc = roc_curve(p, y)
    roc_png(roc["fpr"], roc["tpr"], m["auc"], out / "roc.png")
    rel = cal.reliability(p, y)
    reliability_png([(f"T = {filt.temperature:.3f}, ECE {m['ece']:.4f}", rel)], out / "reliability.png")
    info = {k: v for k, v in describe(filt).items() if k != "metrics"}
    result = {
        "filter": info,
        "data": {"dir": str(args.data_dir), "split": args.split},
        "metrics": m,
        "roc": {k: v.tolist() for k, v in roc.items()},
        "reliability": {k: v.tolist() for k, v in rel.items()},
        "figures": {"roc": "roc.png", "reliability": "reliability.png"},
    }
    result = plain(result)  # NaN (empty reliability bins) as null
    atomic_write(out / "evaluation.json", json.dumps(result, indent=2))
    images = {
        k: base64.b64encode((out / v).read_bytes()).decode("ascii") for k, v in result["figures"].items()
    }
    atomic_write(
        out / "evaluation.html", render("filter_evaluation.html", result=result, images=images, nav=False)
    )
    print(
        f"{out / 'evaluation.json'}: AUC {_f(m['auc'])}, accuracy {m['accuracy']:.4f}, "
        f"F1 wrong {_f(m['f1_wrong'])}, F1 correct {_f(m['f1_correct'])}, ECE {m['ece']:.4f} "
        f"on {m['n']} {args.split} crops (T = {filt.temperature:.4f})"
    )
    return 0


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
