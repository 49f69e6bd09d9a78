"""Task-level estimates from a stratified sample of frames (``ropewatch review sample`` / ``estimate``).

The design: the task's frames are split into strata (``h``: uncertain persons, frames the fast filter
decided alone, the rest); ``n_h`` of the ``N_h`` frames of each are drawn at random without
replacement, so each frame of stratum ``h`` is in the sample with probability ``pi = n_h / N_h``.
People annotate the sampled frames (a Ground Truth job); every per-frame count ``y`` then gives the
Horvitz-Thompson total ``Y = sum(y / pi)`` over the sample, unbiased for the task's total, with
the stratified-SRS variance ``sum_h N_h^2 (1 - n_h/N_h) s_h^2 / n_h`` (``s_h^2``: the sample variance
of ``y`` in stratum ``h``; Cochran, Sampling Techniques, 5.9). Rates (recall, F1, flips per 1,000)
are ratios of two such totals, ``R = Y / X``, with the linearized variance of ``u = y - R x`` over
``X^2`` (Cochran 6.11). Intervals are normal: ``R +- z se``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Estimate:
    value: float | None
    se: float | None
    low: float | None
    high: float | None

    def as_dict(self) -> dict[str, float | None]:
        return {"value": self.value, "se": self.se, "low": self.low, "high": self.high}


def _variance(u: np.ndarray, strata: np.ndarray, sizes: Mapping[str, int]) -> float | None:
    """Stratified-SRS variance of the HT total of ``u``; None where a stratum drew one of several frames."""
    total = 0.0
    for h, big_n in sizes.items():
        values = u[strata == h]
        n = len(values)
        if n == 0 or n == big_n:
            continue  # nothing drawn (no contribution to the total) or a census (no sampling error)
        if n < 2:
            return None
        total += big_n**2 * (1 - n / big_n) * float(np.var(values, ddof=1)) / n
    return total


def ht_total(y: ArrayLike, strata: ArrayLike, sizes: Mapping[str, int], z: float = Z95) -> Estimate:
    """The population total of ``y`` from the sampled units (``strata``: each unit's stratum)."""
    yy, ss = np.asarray(y, float), np.asarray(strata, object)
    weights = np.array([sizes[h] / int((ss == h).sum()) for h in ss]) if len(ss) else np.zeros(0)
    value = float((weights * yy).sum())
    var = _variance(yy, ss, sizes)
    se = None if var is None else math.sqrt(var)
    return Estimate(value, se, None if se is None else value - z * se, None if se is None else value + z * se)


def ht_ratio(
    y: ArrayLike,
    x: ArrayLike,
    strata: ArrayLike,
    sizes: Mapping[str, int],
    *,
    scale: float = 1.0,
    z: float = Z95,
) -> Estimate:
    """``scale * Y / X``; None where the estimated ``X`` is 0."""
    yy, xx, ss = np.asarray(y, float), np.asarray(x, float), np.asarray(strata, object)
    big_y, big_x = ht_total(yy, ss, sizes).value or 0.0, ht_total(xx, ss, sizes).value or 0.0
    if big_x <= 0:
        return Estimate(None, None, None, None)
    r = big_y / big_x
    var = _variance(yy - r * xx, ss, sizes)
    se = None if var is None else math.sqrt(var) / big_x * scale
    value = r * scale
    return Estimate(value, se, None if se is None else value - z * se, None if se is None else value + z * se)


def frame_counts(objects: pd.DataFrame, attribute: str, values: Sequence[str]) -> pd.DataFrame:
    """Per frame: reference persons, dangerous flips (unsafe value predicted as another) and, per class,
    tp/fp/fn on matched pairs -- the counts behind the report's per-class recall and F1."""
    pred = objects[objects["role"] == "prediction"]
    ref = objects[objects["role"] == "reference"]
    frames = sorted(set(objects["frame"].astype(int)))
    out = pd.DataFrame(index=pd.Index(frames, name="frame"))
    out["refs"] = ref.groupby("frame").size().reindex(frames, fill_value=0)
    unsafe = values[0]
    flips = [f"flip_{unsafe}_to_{v}" for v in values[1:]]
    out["dangerous_flips"] = (
        pred[pred["error"].isin(flips)].groupby("frame").size().reindex(frames, fill_value=0)
    )
    for c in values:
        into = [f"flip_{r}_to_{c}" for r in values if r != c]
        out_of = [f"flip_{c}_to_{p}" for p in values if p != c]
        tp = pred[(pred["error"] == "tp") & (pred[attribute] == c)]
        out[f"tp_{c}"] = tp.groupby("frame").size().reindex(frames, fill_value=0)
        out[f"fp_{c}"] = pred[pred["error"].isin(into)].groupby("frame").size().reindex(frames, fill_value=0)
        out[f"fn_{c}"] = (
            pred[pred["error"].isin(out_of)].groupby("frame").size().reindex(frames, fill_value=0)
        )
    return out.astype(int)


def task_estimates(
    counts: pd.DataFrame, strata: Mapping[int, str], sizes: Mapping[str, int], values: Sequence[str]
) -> dict:
    """Weighted estimates for the whole task from the sampled frames' counts (frames absent from
    ``counts`` had no person: zeros). ``strata``: sampled frame -> stratum; ``sizes``: stratum -> N_h."""
    frames = sorted(strata)
    c = counts.reindex(frames, fill_value=0)
    s = [strata[f] for f in frames]
    per_class = {}
    for v in values:
        tp, fp, fn = c[f"tp_{v}"], c[f"fp_{v}"], c[f"fn_{v}"]
        per_class[v] = {
            "recall": ht_ratio(tp, tp + fn, s, sizes).as_dict(),
            "f1": ht_ratio(2 * tp, 2 * tp + fp + fn, s, sizes).as_dict(),
        }
    return {
        "frames_sampled": len(frames),
        "frames_in_task": int(sum(sizes.values())),
        "references": ht_total(c["refs"], s, sizes).as_dict(),
        "dangerous_flips_per_1000": ht_ratio(
            c["dangerous_flips"], c["refs"], s, sizes, scale=1000.0
        ).as_dict(),
        "per_class": per_class,
    }
