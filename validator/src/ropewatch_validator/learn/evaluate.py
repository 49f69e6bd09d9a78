"""`ropewatch calibrate` and `ropewatch evaluate`: temperature scaling and the report of a fast filter.

calibrate: scores the validation crops, fits T by minimizing the NLL of σ(z/T) (scipy, the validator's
``trace.calibration.fit_temperature``), stores T and a ``calibration`` block in the filter checkpoint
(atomically; the function's hot-swap picks it up) and draws the reliability diagram before and after.
A T that does not lower the NLL (constant logits, an already calibrated filter) is refused, nothing
written; a stored T whose ECE is worse, or that sits at the search bound, comes with a warning.

evaluate: AUC, F1, accuracy, the confusion matrix and ECE of the (calibrated) filter on a split, a ROC
curve and the reliability diagram as PNG, and one ``evaluation.json`` plus one ``evaluation.html``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ropewatch_core.errors import InputError, Rejected


@dataclass(frozen=True)
class Calibrated:
    """A calibration that was stored: the new checkpoint, its calibration block and the diagram."""

    output: Path
    temperature: float
    previous_temperature: float
    calibration: dict[str, Any]
    plot: Path
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Evaluated:
    """An evaluation written to ``output_dir``: the split, the temperature and evaluation.json's metrics."""

    output_dir: Path
    split: str
    temperature: float
    metrics: dict[str, Any]


def _scores(filter_path: Path, data_dir: Path, split: str) -> tuple[dict, Any, np.ndarray, np.ndarray]:
    """The raw checkpoint dict, the loaded filter, logits and labels of ``split``."""
    from ropewatch_core.model.checkpoint import read_checkpoint
    from ropewatch_core.model.fast_filter import load_filter
    from ropewatch_validator.learn import data as fd

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


def calibrate(
    filter_path: Path, data_dir: Path, output: Path | None = None, plot: Path | None = None
) -> Calibrated:
    """Fit T on the validation crops and store it (in place without ``output``) with a diagram.
    Rejected (nothing written) when all logits are equal or the fitted T does not lower the NLL."""
    from ropewatch_core.model.checkpoint import save_checkpoint
    from ropewatch_core.model.fast_filter import validate
    from ropewatch_validator.trace import calibration as cal

    output = output or filter_path
    raw, filt, z, y = _scores(filter_path, data_dir, "val")
    if y.min() == y.max():
        raise InputError(f"{data_dir}/val_manifest.csv: one class only; temperature scaling needs both")
    if np.ptp(z) == 0:
        raise Rejected(
            f"the filter gives all {z.size} validation crops the same logit {z[0]:.4g}: no temperature "
            "can calibrate it; nothing written"
        )
    t_old = filt.temperature
    t_new = cal.fit_temperature(z, y)
    figures, warnings = cal.judge_temperature(z, y, t_old, t_new)
    new = dict(raw)
    new["temperature"] = t_new
    new["version"] = f"{filt.version}+cal{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}"
    new["calibration"] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "data": str(data_dir),
        "n": int(y.size),
        "previous_temperature": t_old,
        **figures,
        "warnings": list(warnings),
    }
    validate(new, str(output))  # never write a file the function would refuse
    save_checkpoint(new, output)
    plot = plot or Path(output).with_suffix(".reliability.png")
    c = new["calibration"]
    reliability_png(
        [
            (f"T = {t_old:.3f}, ECE {c['ece_before']:.4f}", cal.reliability(cal.probability(z, t_old), y)),
            (f"T = {t_new:.3f}, ECE {c['ece_after']:.4f}", cal.reliability(cal.probability(z, t_new), y)),
        ],
        plot,
    )
    return Calibrated(Path(output), t_new, t_old, c, plot, warnings)


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


def evaluate_filter(filter_path: Path, data_dir: Path, split: str, output_dir: Path) -> Evaluated:
    """The (calibrated) filter's figures on ``split``: evaluation.json, evaluation.html and two PNGs."""
    import base64

    from ropewatch_core.files import atomic_write
    from ropewatch_core.jsonio import plain
    from ropewatch_core.model.fast_filter import describe
    from ropewatch_validator.evaluation.metrics import roc_curve
    from ropewatch_validator.learn import data as fd
    from ropewatch_validator.render.html import render
    from ropewatch_validator.trace import calibration as cal

    _, filt, z, y = _scores(filter_path, data_dir, split)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    m = fd.metrics(z, y, filt.temperature)
    p = cal.probability(z, filt.temperature)
    roc = roc_curve(p, y)
    roc_png(roc["fpr"], roc["tpr"], m["auc"], out / "roc.png")
    rel = cal.reliability(p, y)
    reliability_png([(f"T = {filt.temperature:.3f}, ECE {m['ece']:.4f}", rel)], out / "reliability.png")
    info = {k: v for k, v in describe(filt).items() if k != "metrics"}
    result = {
        "filter": info,
        "data": {"dir": str(data_dir), "split": split},
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
    return Evaluated(out, split, filt.temperature, result["metrics"])
