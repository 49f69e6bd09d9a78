"""What a number is compared with, and how sure the comparison is (pure numpy/scipy, no I/O).

Two baselines, always labelled (issue 17, item 5; ``ops.baselines`` reads them from the history):

- **reference**: another model version (the previous one by first-seen order, or a pinned one),
  pooled over its jobs. The jobs of two versions are different jobs, so the comparison is
  *unpaired*; its 95% interval is a percentile bootstrap over jobs (runs), seeded, 2,000 resamples,
  each version resampled on its own (``scipy.stats.bootstrap``). Where a paired backtest of the two
  versions was registered, its result is carried beside it.
- **own**: the version's own earlier runs (the median of its first N, or of pinned runs): *drift*.

A run is never part of either: ``ops.baselines`` leaves the judged run and every later one out.

Pooling: a metric is a ratio of per-run sums where the runs' counts allow it (flips per 1,000 persons
= Σ flips / Σ references × 1,000; detection recall = Σ TP / Σ references, precision = Σ TP / Σ
predictions), else the mean over runs (per-class F1, accuracy): the dashboard's versions table pools
the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
from scipy import stats

N_BOOT = 2000
BATCH = 250  # resamples drawn at once: bounds memory for versions of thousands of runs
SEED = 0
LEVEL = 0.95


class Kind(str, Enum):
    REFERENCE = "reference"  # another version, pooled over its jobs: unpaired
    OWN = "own"  # the version's own earlier runs: drift


class Better(str, Enum):
    """A metric's good direction: fewer flips is good, lower F1 is bad."""

    HIGHER = "higher"
    LOWER = "lower"


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def excludes(self, value: float) -> bool:
        return value < self.low or value > self.high

    def text(self, digits: int) -> str:
        return f"95% CI {self.low:.{digits}f}–{self.high:.{digits}f}"


@dataclass(frozen=True)
class Estimate:
    """A pooled (or median) value over ``runs`` runs, with its interval when one was computed."""

    value: float
    runs: int
    ci: Interval | None = None


@dataclass(frozen=True)
class Paired:
    """A registered paired backtest of the same two versions on the same persons (b − a)."""

    estimate: float
    ci: Interval | None
    mcnemar_p: float | None


@dataclass(frozen=True)
class Baseline:
    """The runs a number is compared with, and what they are."""

    kind: Kind
    version: str
    how: str  # "previous version", "pinned reference", "its first 5 earlier runs", "pinned runs"
    run_ids: tuple[int, ...]
    values: Mapping[str, Estimate] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The words every page and alert use for this baseline."""
        if self.kind is Kind.REFERENCE:
            return f"reference {self.version} ({self.how}; {len(self.run_ids)} jobs pooled, unpaired)"
        return f"own earlier runs of {self.version} ({self.how}; drift)"


@dataclass(frozen=True)
class Change:
    """A value against one baseline: what a card, a table cell or an alert shows."""

    metric: str
    better: Better
    value: float | None
    baseline: Baseline
    diff: Estimate | None = None  # value − baseline, with the interval of the difference if known
    paired: Paired | None = None

    @property
    def base(self) -> Estimate | None:
        return self.baseline.values.get(self.metric)

    @property
    def delta(self) -> float | None:
        if self.diff is not None:
            return self.diff.value
        base = self.base
        return None if base is None or self.value is None else self.value - base.value

    @property
    def verdict(self) -> str:
        """``worse``, ``better`` or ``same`` by the metric's good direction (never green when worse)."""
        d = self.delta
        if d is None or d == 0:
            return "same"
        good = d > 0 if self.better is Better.HIGHER else d < 0
        return "better" if good else "worse"

    @property
    def significant(self) -> bool | None:
        """Whether the interval of the difference (or the baseline's, for one run) excludes no change."""
        if self.diff is not None and self.diff.ci is not None:
            return self.diff.ci.excludes(0.0)
        base = self.base
        if self.diff is None and base is not None and base.ci is not None and self.value is not None:
            return base.ci.excludes(self.value)
        return None


@dataclass(frozen=True)
class RunValues:
    """One metric over runs: ``num[i] / den[i] × scale`` is run i's value; pooled = Σ num / Σ den."""

    num: np.ndarray
    den: np.ndarray
    scale: float = 1.0

    @property
    def runs(self) -> int:
        return len(self.num)


def _pooled(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.asarray(values[0].sum(axis=axis) / values[1].sum(axis=axis))


def _stacked(values: RunValues) -> np.ndarray:
    return np.stack([values.num * values.scale, values.den]).astype(np.float64)


def _spread(values: RunValues) -> bool:
    """Whether resampling the runs can move the pooled value (two runs or more, not all alike)."""
    rates = values.num[values.den > 0] / values.den[values.den > 0]
    return values.runs >= 2 and len(set(rates.tolist())) >= 2


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Callable[..., np.ndarray]) -> Interval:
    res = stats.bootstrap(
        data,
        statistic,
        axis=-1,
        n_resamples=N_BOOT,
        batch=BATCH,
        method="percentile",
        random_state=SEED,
        confidence_level=LEVEL,
    )
    return Interval(float(res.confidence_interval.low), float(res.confidence_interval.high))


def point(values: RunValues) -> Estimate | None:
    """The pooled value alone (no interval): where only the difference's interval is shown."""
    if values.runs == 0 or values.den.sum() == 0:
        return None
    return Estimate(float(_pooled(_stacked(values))), values.runs)


def pooled(values: RunValues) -> Estimate | None:
    """The pooled value with its bootstrap interval over runs (none below two runs)."""
    est = point(values)
    if est is None or not _spread(values):
        return est  # one run (or identical runs): no spread to resample
    return Estimate(est.value, est.runs, _bootstrap((_stacked(values),), _pooled))


def _difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return _pooled(b, axis) - _pooled(a, axis)


def difference(a: RunValues, b: RunValues) -> Estimate | None:
    """Pooled b − pooled a, the two versions' runs resampled independently (unpaired)."""
    pa, pb = point(a), point(b)
    if pa is None or pb is None:
        return None
    est = Estimate(pb.value - pa.value, a.runs + b.runs)
    if not (_spread(a) and _spread(b)):  # a side of one run (or of identical runs): no spread over jobs
        return est
    return Estimate(est.value, est.runs, _bootstrap((_stacked(a), _stacked(b)), _difference))


def median(values: RunValues) -> Estimate | None:
    """The median of the runs' values (the own-runs baseline: a robust level, no interval)."""
    keep = values.den > 0
    if not keep.any():
        return None
    per_run = values.num[keep] * values.scale / values.den[keep]
    return Estimate(float(np.median(per_run)), int(keep.sum()))


def proportion_interval(k: int, n: int, scale: float = 1.0) -> Interval | None:
    """Clopper–Pearson (exact binomial) 95% interval of k / n, times ``scale``: one run's uncertainty
    for a share of its persons (flips per 1,000, a class's recall or precision, accuracy)."""
    if n <= 0:
        return None
    ci = stats.binomtest(int(k), int(n)).proportion_ci(confidence_level=LEVEL, method="exact")
    return Interval(ci.low * scale, ci.high * scale)


@dataclass(frozen=True)
class Comparisons:
    """Both baselines of one run (or of a report about to be stored), and registered backtests of
    its version against the reference, by metric path."""

    reference: Baseline | None
    own: Baseline
    paired: Mapping[str, Paired] = field(default_factory=dict)

    def changes(self, metric: str, value: float | None, better: Better) -> tuple[Change | None, Change]:
        """(against the reference version, against the version's own earlier runs)."""
        ref = None
        if self.reference is not None:
            ref = Change(metric, better, value, self.reference, paired=self.paired.get(metric))
        return ref, Change(metric, better, value, self.own)
