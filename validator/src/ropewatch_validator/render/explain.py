"""The report's counts as readers need them: how they add up, what was left out, what each error
type means, and the per-stage and lifecycle blocks of ``--logs``. One set of small tables that
report.md, report.html and the terminal summary all draw (none of them computes a number itself).

Why: detection says FN 24 while the error types say missed 19; the other 5 are references reached
only by a localization error (``covered_by_localization``), which used to show only in the objects
table. Likewise FP = background + localization + duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ropewatch_validator.evaluation.patterns import ERROR_MEANINGS, FLIP_MEANING
from ropewatch_validator.render.model import Report
from ropewatch_validator.trace.lifecycle import STATE_MEANINGS


@dataclass(frozen=True)
class Table:
    """A titled table of text cells (numbers already formatted), with an optional note below."""

    key: str  # the HTML id
    title: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


def _n(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def error_meaning(kind: str, values: Sequence[str]) -> str:
    if kind in ERROR_MEANINGS:
        return ERROR_MEANINGS[kind]
    for ref in values:
        for pred in values:
            if kind == f"flip_{ref}_to_{pred}":
                return FLIP_MEANING.format(ref=ref, pred=pred)
    return ""


def errors(report: Report) -> Table:
    """The error counts with what each type means."""
    values = report.settings.values
    rows = tuple((k, _n(v), error_meaning(k, values)) for k, v in report.errors.counts().items())
    return Table("errors", "Errors", ("type", "count", "meaning"), rows)


def reconciliation(report: Report) -> Table:
    """FN and FP of the detection as sums of the error types."""
    det, err = report.detection, report.errors
    covered = det.fn - err.missed
    unmatched = err.background + err.localization + err.duplicate
    rows = (
        (
            "FN",
            _n(det.fn),
            f"missed {err.missed:,} + covered_by_localization {covered:,}",
        ),
        (
            "FP",
            _n(det.fp),
            f"background {err.background:,} + localization {err.localization:,} + duplicate "
            f"{err.duplicate:,}" + ("" if unmatched == det.fp else f" (= {unmatched:,})"),
        ),
    )
    note = (
        f"covered_by_localization: {ERROR_MEANINGS['covered_by_localization']}. "
        f"TP {det.tp:,} = matched persons; their {report.settings.attribute} errors are the flips."
    )
    return Table("reconciliation", "How the counts add up", ("count", "n", "is"), rows, note)


def left_out(report: Report) -> Table:
    """Shapes not compared (skipped by type or label) and boxes left out of the metrics, by reason."""
    c = report.counts
    rows = tuple(("skipped shape", k, _n(v)) for k, v in sorted(c.skipped_shapes.items()))
    rows += tuple(("left out of the metrics", k, _n(v)) for k, v in sorted(c.dropped.items()))
    total = sum(c.skipped_shapes.values()) + sum(c.dropped.values())
    note = (
        "skipped shapes (other shape types, tags, other labels) are never compared; boxes left out "
        "of the metrics: see the warning above"
        if total
        else "nothing was skipped or left out"
    )
    return Table("left-out", f"Skipped and left out ({total:,})", ("what", "reason", "n"), rows, note)


def stages(report: Report) -> Table | None:
    """The fast-filter cascade per stage (``trace.stages``); None without cascade records."""
    s = report.trace.stages if report.trace else None
    if not s:
        return None
    rows = tuple(
        (name, _n(s.stages[name].n), _n(s.stages[name].kept), _n(s.stages[name].accuracy))
        for name in ("filter", "expert")
        if name in s.stages
    )
    note = (
        f"{_n(s.requests)} requests, {_n(s.requests_skipping_expert)} skipped the expert "
        f"(frame skip share {_n(s.frame_skip_share)}); persons decided by the filter "
        f"{_n(s.persons_by_filter_share)}; shadow answers {_n(s.shadow.n)}, agreement with "
        f"the filter {_n(s.shadow.agreement_with_filter)}"
    )
    header = ("stage", "persons decided", "kept in the job", "accuracy")
    return Table("stages", "Cascade per stage", header, rows, note)


def lifecycle(report: Report) -> Table | None:
    """What happened to each predicted object (``trace.lifecycle``); None without ``--logs``."""
    life = report.trace.lifecycle if report.trace else None
    if life is None:
        return None
    rows = tuple((state, _n(n), STATE_MEANINGS.get(state, "")) for state, n in life.counts.items())
    note = (
        f"work saved {_n(life.work_saved_share)} (accepted / the job's final objects, "
        f"{_n(life.final_objects)}); attribute mapping {life.attribute_mapping}; "
        f"{len(life.unjoined_shapes):,} shapes not joined to a logged prediction"
    )
    return Table("lifecycle", "Lifecycle of the predictions", ("state", "objects", "meaning"), rows, note)


def tables(report: Report) -> list[Table]:
    """Every explanatory table of a report, in reading order."""
    out = [reconciliation(report), errors(report), left_out(report)]
    return out + [t for t in (stages(report), lifecycle(report)) if t is not None]
