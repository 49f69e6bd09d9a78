"""`ropewatch checkpoint recalibrate`: refit temperature and threshold from a traced report.

The report's ``trace.scores`` holds, for every predicted object whose final value a person
confirmed or corrected, the logged pre-temperature logit and the final value. From them we fit
``temperature`` (NLL, scipy) and pick the decision cut on the logit (max macro F1, or the lowest cut
meeting a required recall of ``wrong``), then write ``thr = sigmoid(cut / T_fit)`` so that the
function's rule ``sigmoid(z / T) >= thr`` makes exactly the chosen decisions. Everything else in
the checkpoint (weights, labels, config) is kept byte-for-byte in meaning.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ropewatch_core.errors import InputError

if TYPE_CHECKING:
    from ropewatch_validator.render.model import Report

OBJECTIVES = ("macro-f1", "recall-wrong")


class RecalibrationError(InputError):
    """The report cannot recalibrate this checkpoint (missing trace, one class only, wrong model)."""


def scores_from_report(report: Report) -> tuple[np.ndarray, np.ndarray]:
    if report.trace is None:
        raise RecalibrationError("report has no trace.scores (run validate-job with --logs)")
    z, y = np.asarray(report.trace.scores.logit, float), np.asarray(report.trace.scores.y, int)
    if z.size == 0 or y.min() == y.max():
        raise RecalibrationError(
            f"need both classes among traced objects, have {int(y.sum())} correct / "
            f"{int(y.size - y.sum())} wrong"
        )
    return z, y


def recalibrate(
    checkpoint: dict,
    report: Report,
    *,
    objective: str = "macro-f1",
    required_recall_wrong: float = 0.95,
    report_name: str = "",
    allow_other_version: bool = False,
    version: str | None = None,
) -> dict:
    """A new checkpoint dict with fitted ``temperature``, chosen ``thr`` and a ``calibration`` block.

    The report must trace exactly the checkpoint's model version: ``version`` (what the function
    logs for it, ``checkpoint.version_of``), by default the checkpoint's own ``version``. Without
    one on either side the check cannot be made, and that is refused too (``allow_other_version``
    accepts any report).
    """
    from ropewatch_validator.trace import (
        calibration as cal,  # scipy: imported here so `ropewatch --help` stays fast
    )

    if objective not in OBJECTIVES:
        raise RecalibrationError(f"objective must be one of {OBJECTIVES}, not {objective!r}")
    z, y = scores_from_report(report)
    versions = report.trace.model_versions if report.trace else []
    own = checkpoint.get("version")
    expected = version or own
    if (expected is None or versions != [expected]) and not allow_other_version:
        raise RecalibrationError(
            f"report traces model version(s) {versions or 'none'}, checkpoint is "
            f"{expected or 'unversioned'!r} (pass --allow-other-version to use it anyway)"
        )
    t_old = float(checkpoint.get("temperature") or 1.0)
    thr_old = float(checkpoint["thr"])
    t_fit = cal.fit_temperature(z, y)
    ops = cal.choose_thresholds(
        z, y, t_fit, required_recall_wrong, cal.reexpress_threshold(thr_old, t_old, t_fit)
    )
    key = "max_macro_f1" if objective == "macro-f1" else "recall_wrong"
    if key not in ops:
        raise RecalibrationError(f"no threshold reaches recall(wrong) >= {required_recall_wrong}")
    op = ops[key]
    now = datetime.now(timezone.utc)
    out = copy.copy(checkpoint)
    out["temperature"] = t_fit
    out["thr"] = op.thr
    # decisions change, so the logs and history must be able to tell the two apart
    out["version"] = f"{own or 'model'}+cal{now:%Y%m%dT%H%M%SZ}"
    src = report.source
    out["calibration"] = {
        "date": now.isoformat(timespec="seconds"),
        "data": {
            "report": report_name,
            "host": src.host,
            "job": src.job,
            "task": src.task,
            "model_versions": versions,
            "n": int(z.size),
            "n_correct": int(y.sum()),
            "n_wrong": int(y.size - y.sum()),
        },
        "objective": objective if objective == "macro-f1" else f"recall-wrong>={required_recall_wrong:g}",
        "previous": {"temperature": t_old, "thr": thr_old, "version": own},
        "metrics": {
            "ece_before": cal.ece(cal.probability(z, t_old), y),
            "ece_after": cal.ece(cal.probability(z, t_fit), y),
            "nll_before": cal.nll(z, y, t_old),
            "nll_after": cal.nll(z, y, t_fit),
            "logit_cut": op.cut,
            "macro_f1": op.macro_f1,
            "f1_wrong": op.f1_wrong,
            "f1_correct": op.f1_correct,
            "recall_wrong": op.recall_wrong,
            "confusion": op.confusion,
            "before": ops["current"].as_dict(),
        },
    }
    return out


def read_report(path: Path) -> Report:
    """A report.json as the typed report; any problem is a RecalibrationError naming the file."""
    from pydantic import ValidationError

    from ropewatch_validator.render.model import Report

    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecalibrationError(f"--from {path}: cannot read ({exc.strerror})") from None
    except (ValueError, RecursionError) as exc:
        reason = str(exc).splitlines()[0][:120] if isinstance(exc, ValueError) else "nested too deep"
        raise RecalibrationError(f"--from {path}: not a JSON report.json ({reason})") from None
    if not isinstance(report, dict):
        raise RecalibrationError(f"--from {path}: not a report.json (a JSON {type(report).__name__})")
    try:
        return Report.model_validate(report)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top level"
        raise RecalibrationError(
            f"--from {path}: not a report.json ({where}: {first['msg']}; {exc.error_count()} problem(s))"
        ) from None


def register(checkpoint_sub: argparse._SubParsersAction) -> None:
    """Add ``recalibrate`` under ``ropewatch checkpoint``."""
    p = checkpoint_sub.add_parser(
        "recalibrate",
        help="refit temperature and thr from a traced report.json",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("checkpoint", type=Path, metavar="CKPT")
    p.add_argument(
        "--from",
        dest="report",
        type=Path,
        required=True,
        metavar="REPORT.json",
        help="a validate-job report made with --logs (it has trace.scores)",
    )
    p.add_argument("-o", "--output", type=Path, required=True, metavar="NEW.pt")
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="macro-f1",
        help="threshold that maximizes macro F1, or the lowest meeting --required-recall-wrong",
    )
    p.add_argument("--required-recall-wrong", type=float, default=0.95)
    p.add_argument(
        "--allow-other-version", action="store_true", help="use a report traced on another model version"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load (validated by ropewatch_core.model.checkpoint), refit, validate the result, write atomically."""
    from ropewatch_validator.learn.model import (
        CheckpointError,
        normalised,
        read_checkpoint,
        save_checkpoint,
        validate,
        version_of,
    )

    try:
        raw, sha = read_checkpoint(args.checkpoint)
        validate(raw, str(args.checkpoint))  # a clear message for a bad file
        raw = normalised(raw, str(args.checkpoint))  # thr/version from config, if the trainer put them there
        new = recalibrate(
            raw,
            read_report(args.report),
            objective=args.objective,
            required_recall_wrong=args.required_recall_wrong,
            report_name=str(args.report),
            allow_other_version=args.allow_other_version,
            version=version_of(raw, sha),
        )
        validate(new, str(args.output))  # never write a file the function would refuse
        save_checkpoint(new, args.output)
    except (RecalibrationError, CheckpointError) as exc:
        print(f"ropewatch checkpoint recalibrate: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"ropewatch checkpoint recalibrate: cannot write {args.output}: {exc.strerror}", file=sys.stderr
        )
        return 2
    cal_block = new["calibration"]
    m, before = cal_block["metrics"], cal_block["previous"]
    print(
        f"{args.output}: version {new['version']}; "
        f"temperature {new['temperature']:.4f} (was {before['temperature']:g}), "
        f"thr {new['thr']:.4f} (was {before['thr']:g}); ECE {m['ece_before']:.4f} -> {m['ece_after']:.4f}; "
        f"macro F1 {m['before']['macro_f1']:.4f} -> {m['macro_f1']:.4f}; recall(wrong) "
        f"{m['before']['recall_wrong']:.4f} -> {m['recall_wrong']:.4f} "
        f"on {cal_block['data']['n']} traced objects"
    )
    return 0
