"""The two baselines of a run, read from the history store (the statistics: ``evaluation.baseline_stats``).

- The **reference version** of a model version is the one pinned for it (``ropewatch baseline
  reference``), else the version stored just before it by first-seen order (for a version with no
  stored run yet: the last one first seen). All its runs are pooled: unpaired, with bootstrap
  intervals over jobs, and the paired backtest of the two where one was registered
  (``ropewatch baseline add-backtest``).
- The **own baseline** (drift) is the median of the version's first N runs stored *before* the run
  judged (or of its pinned runs, less the judged one). A run is never part of its own baseline.

Report pages (validate-job's report.html, the dashboard's run page), alerts and the versions table
all take their comparisons from here, so they agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError

from ropewatch_core.errors import InputError
from ropewatch_validator.evaluation.baseline_stats import (
    Baseline,
    Better,
    Change,
    Comparisons,
    Estimate,
    Interval,
    Kind,
    Paired,
    RunValues,
    difference,
    median,
    point,
    pooled,
    proportion_interval,
)
from ropewatch_validator.evaluation.metrics import f1
from ropewatch_validator.ops.history import DEFAULT_BASELINE_RUNS, HistoryStore, job_state, model_version_of
from ropewatch_validator.render.model import Report

CLASS_METRIC = re.compile(r"^attribute\.per_class\.(?P<cls>.+)\.(?P<m>precision|recall|f1)$")
PAIR_FLIPS = re.compile(r"^flips_(?P<ref>.+)_to_(?P<pred>.+)_per_1000$")
MEAN_COLUMNS = {"detection.f1": "det_f1", "detection.ap": "det_ap", "attribute.accuracy": "accuracy"}
MEAN_COLUMNS["attribute.macro_f1"] = "macro_f1"


def better_of(metric: str) -> Better:
    """Flips and error counts are good when low; every other metric (F1, recall, AP...) when high."""
    low = metric.startswith("errors.") or "flips" in metric
    return Better.LOWER if low else Better.HIGHER


def comparable(metric: str) -> bool:
    """Whether the history's columns hold the metric per run (so a reference can pool it)."""
    return metric in MEAN_COLUMNS or metric in _POOLED or CLASS_METRIC.match(metric) is not None


def _flips(row: Mapping[str, Any]) -> tuple[Any, Any]:
    return row["dangerous_flips"], row["references"]


def _recall(row: Mapping[str, Any]) -> tuple[Any, Any]:
    tp = None if row["det_recall"] is None else row["det_recall"] * row["references"]
    return tp, row["references"]


def _precision(row: Mapping[str, Any]) -> tuple[Any, Any]:
    tp = (
        None
        if row["det_recall"] is None or row["det_precision"] is None
        else row["det_recall"] * row["references"]
    )
    return tp, row["predictions"]


# Σ num / Σ den over runs, as the dashboard's versions table pools them
_POOLED = {"dangerous_flips_per_1000": (_flips, 1000.0), "detection.recall": (_recall, 1.0)}
_POOLED["detection.precision"] = (_precision, 1.0)


def run_values(rows: Iterable[Mapping[str, Any]], metric: str) -> RunValues | None:
    """One metric over ``HistoryStore.trend`` rows (runs without it left out); None if not a column."""
    pairs: list[tuple[Any, Any]]
    scale = 1.0
    rows = list(rows)
    if metric in _POOLED:
        get, scale = _POOLED[metric]
        pairs = [get(r) for r in rows]
    elif metric in MEAN_COLUMNS:
        pairs = [(r[MEAN_COLUMNS[metric]], 1) for r in rows]
    elif (m := CLASS_METRIC.match(metric)) is not None:
        pairs = [(r["classes"].get(m["cls"], {}).get(m["m"]), 1) for r in rows]
    else:
        return None
    kept = [(float(n), float(d)) for n, d in pairs if n is not None and d]
    num = np.array([n for n, _ in kept], dtype=np.float64)
    return RunValues(num, np.array([d for _, d in kept], dtype=np.float64), scale)


def _values(rows: Sequence[Mapping[str, Any]], metrics: Iterable[str], how: Any) -> dict[str, Estimate]:
    out = {}
    for metric in metrics:
        values = run_values(rows, metric)
        estimate = how(values) if values is not None else None
        if estimate is not None:
            out[metric] = estimate
    return out


def reference_of(store: HistoryStore, version: str) -> tuple[str, str] | None:
    """(the reference version, how it was chosen), or None for the first version."""
    pinned = store.pinned_reference(version)
    if pinned is not None:
        return pinned, "pinned reference"
    order = store.versions_first_seen()
    if version in order:
        i = order.index(version)
        return (order[i - 1], "previous version") if i > 0 else None
    return (order[-1], "previous version") if order else None


def reference_baseline(store: HistoryStore, version: str, metrics: Iterable[str]) -> Baseline | None:
    ref = reference_of(store, version)
    if ref is None:
        return None
    rows = store.trend(model_version=ref[0])
    ids = tuple(int(r["id"]) for r in rows)
    return Baseline(Kind.REFERENCE, ref[0], ref[1], ids, _values(rows, metrics, pooled))


def own_baseline(
    store: HistoryStore,
    version: str,
    metrics: Iterable[str],
    first_n: int = DEFAULT_BASELINE_RUNS,
    before_run: int | None = None,
) -> Baseline:
    """The median of the version's first ``first_n`` runs stored before ``before_run`` (all stored
    runs when None), or of its pinned runs less ``before_run``."""
    rows = store.trend(model_version=version)
    pinned_ids, pinned = store.baseline_runs(version, first_n)
    if pinned:
        chosen = [r for r in rows if r["id"] in set(pinned_ids) and r["id"] != before_run]
        how = f"{len(chosen)} pinned runs"
    else:
        chosen = [r for r in rows if before_run is None or r["id"] < before_run][:first_n]
        n = len(chosen)
        how = (
            f"median of its first {n} earlier run{'' if n == 1 else 's'}" if chosen else "no earlier runs yet"
        )
    ids = tuple(int(r["id"]) for r in chosen)
    values = _values(chosen, metrics, median)
    # metrics the runs' columns do not hold (error counts, one pair's flips): from the stored reports
    others = [m for m in metrics if not comparable(m)]
    reports = store.reports(ids) if others and ids else []
    for metric in others:
        found = [v for v in (r.metric(metric) for r in reports) if v is not None]
        if found:
            values[metric] = Estimate(float(np.median(found)), len(found))
    return Baseline(Kind.OWN, version, how, ids, values)


def own_levels(
    store: HistoryStore, version: str, metrics: Sequence[str], first_n: int = DEFAULT_BASELINE_RUNS
) -> dict[str, float | None]:
    """The own baseline of a version as a whole (its first N stored runs, or its pinned runs), by
    metric: what ``ropewatch history`` and ``baseline show`` print; None where no run has the metric."""
    values = own_baseline(store, version, metrics, first_n).values
    return {m: values[m].value if m in values else None for m in metrics}


def backtest_path(metric: str) -> str:
    """A history metric's name in a backtest's ``diffs`` (the IFACE's metric paths)."""
    if metric == "dangerous_flips_per_1000":
        return "flips_per_1000"
    return metric.removeprefix("attribute.")


def comparisons(
    store: HistoryStore,
    version: str,
    metrics: Sequence[str],
    first_n: int = DEFAULT_BASELINE_RUNS,
    before_run: int | None = None,
) -> Comparisons:
    """Both baselines of a run of ``version`` (``before_run``: its id once stored)."""
    ref = reference_baseline(store, version, metrics)
    paired = _paired(store, ref.version, version, metrics) if ref is not None else {}
    return Comparisons(ref, own_baseline(store, version, metrics, first_n, before_run), paired)


def _paired(store: HistoryStore, reference: str, version: str, metrics: Sequence[str]) -> dict[str, Paired]:
    """The registered backtest's paired differences (version − reference), by history metric."""
    pair = store.backtest_pair(reference, version)
    out = {}
    for metric in metrics if pair is not None else ():
        d = pair["diffs"].get(backtest_path(metric)) if pair is not None else None
        if d is not None and pair is not None:
            ci = None if d.get("low") is None else Interval(d["low"], d["high"])
            out[metric] = Paired(d["estimate"], ci, pair["mcnemar_p"])
    return out


def for_report(store: HistoryStore, report: Report, metrics: Sequence[str], first_n: int) -> Comparisons:
    """The comparisons of a report about to be stored (or stored before, under ``--force``)."""
    return comparisons(store, model_version_of(report), metrics, first_n, store.run_id(job_state(report)))


def version_changes(
    store: HistoryStore,
    version: str,
    metrics: Sequence[str],
    trends: Mapping[str, list[dict[str, Any]]] | None = None,
) -> dict[str, Change]:
    """Each metric of a whole version against its reference: pooled both sides, the difference with
    its unpaired bootstrap interval (the versions table). ``trends``: ``HistoryStore.trend`` rows by
    version, when the caller has them already (one read per version for the whole table)."""
    ref = reference_of(store, version)
    if ref is None:
        return {}
    trends = trends if trends is not None else {}
    mine = trends[version] if version in trends else store.trend(model_version=version)
    theirs = trends[ref[0]] if ref[0] in trends else store.trend(model_version=ref[0])
    base = Baseline(
        Kind.REFERENCE, ref[0], ref[1], tuple(int(r["id"]) for r in theirs), _values(theirs, metrics, point)
    )
    paired = _paired(store, ref[0], version, metrics)
    out = {}
    for metric in metrics:
        a, b = run_values(theirs, metric), run_values(mine, metric)
        own = None if b is None else point(b)
        if a is None or b is None or own is None:
            continue
        out[metric] = Change(metric, better_of(metric), own.value, base, difference(a, b), paired.get(metric))
    return out


# -------------------------------------------------------------------------- one run's uncertainty
def _class_index(report: Report, name: str) -> int | None:
    labels = report.attribute.labels
    return labels.index(name) if name in labels else None


def _f1_interval(cm: np.ndarray, i: int, n_boot: int = 2000, seed: int = 0) -> Interval | None:
    """Percentile interval of class i's F1, persons resampled from the confusion matrix (multinomial:
    persons independent, frames not clustered: the history keeps no per-person rows)."""
    total = int(cm.sum())
    if total == 0:
        return None
    draws = (
        np.random.default_rng(seed)
        .multinomial(total, cm.ravel() / total, size=n_boot)
        .reshape(n_boot, *cm.shape)
    )
    tp = draws[:, i, i]
    values = f1(tp, draws[:, :, i].sum(1) - tp, draws[:, i, :].sum(1) - tp)
    low, high = np.percentile(values, [2.5, 97.5])
    return Interval(float(low), float(high))


def run_interval(report: Report, metric: str) -> Interval | None:
    """The 95% interval of one run's metric: exact binomial for shares of persons (flips per 1,000,
    a class's recall or precision, accuracy, detection recall and precision), a multinomial bootstrap
    for a class's F1; None for other metrics (``interval_supported``)."""
    att, det, refs = report.attribute, report.detection, report.counts.references
    cm = np.asarray(att.confusion_matrix, dtype=np.int64)
    if metric == "dangerous_flips_per_1000":
        return proportion_interval(report.dangerous_flips(), refs, 1000.0)
    if (m := PAIR_FLIPS.match(metric)) is not None:
        k = report.errors.flip(m["ref"], m["pred"])
        return None if k is None else proportion_interval(k, refs, 1000.0)
    if metric == "detection.recall":
        return proportion_interval(det.tp, det.tp + det.fn)
    if metric == "detection.precision":
        return proportion_interval(det.tp, det.tp + det.fp)
    if metric == "attribute.accuracy":
        return proportion_interval(int(np.trace(cm)), int(cm.sum()))
    if (m := CLASS_METRIC.match(metric)) is not None and (i := _class_index(report, m["cls"])) is not None:
        if m["m"] == "recall":
            return proportion_interval(int(cm[i, i]), int(cm[i, :].sum()))
        if m["m"] == "precision":
            return proportion_interval(int(cm[i, i]), int(cm[:, i].sum()))
        return _f1_interval(cm, i)
    return None


def interval_supported(metric: str) -> bool:
    return (
        metric
        in ("dangerous_flips_per_1000", "detection.recall", "detection.precision", "attribute.accuracy")
        or PAIR_FLIPS.match(metric) is not None
        or CLASS_METRIC.match(metric) is not None
    )


# -------------------------------------------------------------------------- registering a backtest
class _Diff(BaseModel):
    model_config = ConfigDict(extra="ignore")
    estimate: float
    low: float | None = None
    high: float | None = None


class _Pair(BaseModel):
    """What the history keeps of a backtest's ``pairs[]`` entry (IFACE.md; the rest stays in the file)."""

    model_config = ConfigDict(extra="ignore")
    a: str
    b: str
    mcnemar_p: float | None = None
    diffs: dict[str, _Diff]


class _Backtest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    pairs: list[_Pair]
    data: dict[str, Any] = {}


class BacktestFileError(InputError):
    """A backtest.json that cannot be registered; the message names the file."""


def register_backtest(store: HistoryStore, path: str, text: str) -> list[tuple[str, str]]:
    """Store each pair of a ``ropewatch backtest`` result; returns the (a, b) pairs registered."""
    try:
        result = _Backtest.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BacktestFileError(f"{path}: not a backtest result ({where}: {first['msg']})") from None
    if not result.pairs:
        raise BacktestFileError(f"{path}: the backtest has no pairs of versions to register")
    source = f"{path.rsplit('/', 1)[-1]} ({result.data.get('n_persons', '?')} persons)"
    for pair in result.pairs:
        diffs = {k: v.model_dump() for k, v in pair.diffs.items()}
        store.add_backtest_pair(pair.a, pair.b, source, pair.mcnemar_p, diffs)
    return [(p.a, p.b) for p in result.pairs]
