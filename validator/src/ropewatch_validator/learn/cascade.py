"""`ropewatch cascade tune`: choose the fast filter's band [lo, hi] on validation data and store it.

For every validation person (``val_manifest.csv`` of ``dataset build``) the filter's calibrated P and
the expert's decision are computed on the kept frame, as the function computes them (one expert pass
per frame over that frame's persons). ropewatch_core.cascade.tune_band then picks the band with the
largest share of frames that skip the expert, subject to agreement with the expert >= ``--target`` and
a recall of ``wrong`` (against the reference) no lower than the expert's. The band and its figures are
written into the filter checkpoint (validated, atomically: the function's hot-swap picks it up).
"""

from __future__ import annotations

from pathlib import Path

from ropewatch_core.cascade import BandChoice, tune_band
from ropewatch_core.errors import InputError


def person_scores(filter_path: Path, expert_path: Path, data_dir: Path) -> dict:
    """Per validation person: filter P, expert decision (1 = correct), reference y and frame."""
    import numpy as np

    from ropewatch_core.image import load_frame
    from ropewatch_core.model.fast_filter import load_filter
    from ropewatch_core.model.pipeline import Predictor
    from ropewatch_validator.learn.data import DataError, read_manifest

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


def tune(
    filter_path: Path, expert_path: Path, data_dir: Path, target: float = 0.99, output: Path | None = None
) -> BandChoice:
    """Tune the band on the validation persons and store it (in place without ``output``)."""
    from ropewatch_core.model.checkpoint import read_checkpoint, save_checkpoint
    from ropewatch_core.model.fast_filter import validate

    if not 0.0 < target <= 1.0:
        raise InputError(f"--target must be in (0, 1], got {target}")
    output = output or filter_path
    s = person_scores(filter_path, expert_path, data_dir)
    choice = tune_band(s["p"], s["expert"], s["y"], s["frame"], target)
    raw, _ = read_checkpoint(filter_path)
    new = {**raw, "band": [choice.lo, choice.hi], "cascade": {**choice.as_dict(), "target": target}}
    validate(new, str(output))
    save_checkpoint(new, output)
    return choice
