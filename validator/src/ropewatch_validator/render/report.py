"""Assemble the typed report (``render.model.Report``) from the measured tables and render it as
report.json, Markdown, HTML and a terminal summary.

The report is the one source: Markdown, HTML, the terminal, history and alerts all read its typed
fields. Its schema is ``render/report.schema.json``, generated from the model; keys are only ever added.
"""

from __future__ import annotations

import html as html_text
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ropewatch_core.files import atomic_write
from ropewatch_core.jsonio import utc_iso
from ropewatch_validator.evaluation import measure, patterns
from ropewatch_validator.evaluation.baseline_stats import Comparisons
from ropewatch_validator.evaluation.match import Settings
from ropewatch_validator.render import explain, html, trace_html
from ropewatch_validator.render.model import SCHEMA_VERSION, ObjectRows, Report, Source
from ropewatch_validator.render.thumbs import Thumbnail

if TYPE_CHECKING:
    from rich.console import Console

FORMATS = ("json", "md", "html")
OBJECT_FIELDS = (*patterns.OBJECT_COLUMNS, "size", "aspect", "cell_x", "cell_y")


def object_rows(obj: pd.DataFrame, attribute: str) -> ObjectRows:
    """Per-object rows in pandas' "split" layout, ``{"columns": [...], "rows": [[...], ...]}``: field
    names are not repeated 200,000 times, and ``objects_frame`` turns it back into a DataFrame."""
    cols = [c for c in (*OBJECT_FIELDS, attribute) if c in obj]
    table = obj[cols].astype(object)
    values = table.where(table.notna(), None).to_numpy().tolist()
    return ObjectRows.model_construct(columns=cols, rows=values)


def objects_frame(report: Report) -> pd.DataFrame:
    return pd.DataFrame(report.objects.rows, columns=report.objects.columns)


def build(
    *,
    source: Source,
    settings: Settings,
    frames: pd.DataFrame,
    pred: pd.DataFrame,
    ref: pd.DataFrame,
    skipped: dict,
    dropped: dict | None = None,
    model_version: str | None = None,
) -> Report:
    """Every number of the report from matched tables (``ropewatch_validator.evaluation.match.match`` output).

    The per-object rows (200,000 on a large job) are built by our own code and go in unvalidated;
    every other block is validated against the model."""
    p_type, r_type = patterns.classify(pred, ref, settings)
    obj = patterns.object_table(pred, ref, p_type, r_type, frames, settings)
    det = measure.detection(pred, ref)
    det["ap"], curve = measure.average_precision(pred, len(ref))
    evaluated = frames.loc[~frames["deleted"], "frame"]
    report = Report.model_validate(
        {
            "schema_version": SCHEMA_VERSION,
            "generated_at": utc_iso(),
            "source": source,
            "model_version": model_version,
            "settings": settings,
            "counts": {
                "frames": len(frames),
                "frames_evaluated": int(evaluated.size),
                "frames_deleted": int(frames["deleted"].sum()),
                "predictions": len(pred),
                "references": len(ref),
                "semi_auto": int(pred["source"].isin(settings.edited_sources).sum()),
                "skipped_shapes": {str(k): int(v) for k, v in skipped.items()},
                "dropped": {str(k): int(v) for k, v in (dropped or {}).items() if v},
            },
            "detection": det,
            "attribute": measure.attribute(pred, ref, settings.attribute, settings.values),
            "errors": patterns.error_counts(p_type, r_type, pred, settings),
            "breakdowns": patterns.breakdowns(obj),
            "worst_frames": patterns.worst_frames(obj, settings.top_k),
            "error_ranges": patterns.error_ranges(obj, settings.top_k),
            "objects": {"columns": [], "rows": []},
            "pr_curve": curve,
        }
    )
    report.objects = object_rows(obj, settings.attribute)
    report.warnings = warnings(report)
    return report


def warnings(report: Report) -> list[str]:
    """What must not go unnoticed: data left out, and attribute metrics that are null for want of values."""
    out = []
    left_out = report.counts.dropped
    if left_out:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(left_out.items()))
        out.append(f"{sum(left_out.values())} left out of the metrics: {reasons}")
    att = report.attribute
    if sum(att.row_totals) == 0:
        pairs = report.detection.tp
        out.append(
            f"no matched pair has a {att.name} value ({pairs} matched, {att.pairs_without_value} without a "
            f"value): the confusion matrix is empty and every {att.name} metric is null; alert rules on "
            "them fire only with fire_on_null"
        )
    return out


def _fmt(v: object) -> str:
    return "–" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*[]|"})


def md(value: object) -> str:
    """Text from CVAT (labels, values, hosts, model versions) as Markdown shows it literally: HTML
    escaped as report.html escapes it, and the characters that would start code, emphasis, links or
    a table cell backslash-escaped."""
    return html_text.escape(str(value), quote=False).translate(MD_SPECIAL)


def _md_table(t: explain.Table) -> list[str]:
    lines = [f"## {md(t.title)}", "", "| " + " | ".join(md(h) for h in t.header) + " |"]
    lines.append("|" + "---|" * len(t.header))
    lines += ["| " + " | ".join(md(c) for c in row) + " |" for row in t.rows]
    return lines + (["", md(t.note)] if t.note else []) + [""]


def markdown(report: Report) -> str:
    src, det, att = report.source, report.detection, report.attribute
    labels = [md(v) for v in att.labels]
    lines = [
        f"# Validation of job {src.job} (task {src.task})",
        "",
        f"CVAT {md(src.host)} · reference: {src.reference_mode} · model version: "
        f"{md(report.model_version or 'unknown')} · IoU ≥ {report.settings.iou} · "
        f"{report.counts.frames_evaluated} frames · generated {report.generated_at}",
        "",
        *(line for w in report.warnings for line in (f"**warning:** {md(w)}", "")),
        f"## Detection ({md(report.settings.label)})",
        "",
        "| TP | FP | FN | precision | recall | F1 | AP |",
        "|---|---|---|---|---|---|---|",
        f"| {det.tp} | {det.fp} | {det.fn} | {_fmt(det.precision)} | {_fmt(det.recall)} | "
        f"{_fmt(det.f1)} | {_fmt(det.ap)} |",
        "",
        f"## {md(att.name)} on matched persons",
        "",
        "| reference \\ prediction | " + " | ".join(labels) + " | total | missed |",
        "|---|" + "---|" * (len(labels) + 2),
    ]
    for i, v in enumerate(att.labels):
        lines.append(
            f"| **{md(v)}** | "
            + " | ".join(str(x) for x in att.confusion_matrix[i])
            + f" | {att.row_totals[i]} | {att.missed[v]} |"
        )
    lines += [
        "| total | " + " | ".join(str(x) for x in att.column_totals) + " | | |",
        "| extra | " + " | ".join(str(att.extra[v]) for v in att.labels) + " | | |",
        "",
        "| class | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for v, m in att.per_class.items():
        lines.append(f"| {md(v)} | {_fmt(m.precision)} | {_fmt(m.recall)} | {_fmt(m.f1)} | {m.support} |")
    lines += [
        f"| accuracy | | | {_fmt(att.accuracy)} | |",
        f"| macro F1 | | | {_fmt(att.macro_f1)} | |",
        "",
    ]
    for table in explain.tables(report):
        lines += _md_table(table)
    lines += ["## Worst frames", "", "| frame | errors | types |", "|---|---|---|"]
    lines += [
        f"| {w.frame} | {w.errors} | " + ", ".join(f"{md(k)}: {n}" for k, n in w.by_type.items()) + " |"
        for w in report.worst_frames
    ]
    b = report.breakdowns
    for dim, rows in (("size", b.size), ("aspect", b.aspect), ("occluded", b.occluded)):
        lines += [
            "",
            f"## By {dim}",
            "",
            "| bucket | refs | preds | missed | FP | flips | recall | precision |",
            "|---|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {md(r.bucket)} | {r.references} | {r.predictions} | {r.missed} | {r.false_positives}"
            f" | {r.flips} | {_fmt(r.recall)} | {_fmt(r.precision)} |"
            for r in rows
        ]
    return "\n".join(lines) + "\n"


def html_page(
    report: Report,
    thumbnails: dict[int, Thumbnail] | None = None,
    comparisons: Comparisons | None = None,
) -> str:
    """The self-contained report.html (``render.html``): KPI cards, tables, worst frames, objects, and
    with ``--logs`` the calibration figures and the most-confident-mistakes panel."""
    trace_figures = trace_html.figures(report.trace.model_dump()) if report.trace else None
    return html.report_page(
        report, thumbnails=thumbnails, comparisons=comparisons, trace_figures=trace_figures
    )


def to_json(report: Report) -> str:
    """Strict JSON (non-finite numbers are null in the model already)."""
    return report.to_json()


@dataclass
class StagedReports:
    """One job's report folder written aside, then swapped in as a unit (``ops.schedule.Staged``).

    ``publish`` renames the staged folder onto ``target`` (an older one is moved aside first);
    ``undo`` puts the older folder back; ``finish`` removes it. Leftovers of a killed run (the
    hidden ``.job-N.*`` folders beside the target) are removed when the job is next staged.
    """

    target: Path
    staged: Path
    paths: list[Path]
    old: Path | None = None

    def publish(self) -> None:
        if self.target.exists():
            self.old = self.target.with_name(f"{self.staged.name}.old")
            self.target.rename(self.old)
        self.staged.rename(self.target)

    def undo(self) -> None:
        shutil.rmtree(self.staged if self.staged.exists() else self.target, ignore_errors=True)
        if self.old is not None:
            self.old.rename(self.target)
            self.old = None

    def finish(self) -> None:
        if self.old is not None:
            shutil.rmtree(self.old, ignore_errors=True)


def stage(
    report: Report,
    out_dir: Path,
    formats: tuple[str, ...] = FORMATS,
    *,
    thumbnails: dict[int, Thumbnail] | None = None,
    comparisons: Comparisons | None = None,
) -> StagedReports:
    """Render every format into a hidden folder beside ``out_dir``; nothing is left on failure."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.*"):
        shutil.rmtree(stale, ignore_errors=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    render = {
        "json": to_json,
        "md": markdown,
        "html": lambda r: html_page(r, thumbnails, comparisons),
    }
    try:
        for fmt in formats:
            atomic_write(staged / f"report.{fmt}", render[fmt](report))
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    os.chmod(staged, 0o755 & ~_umask())
    return StagedReports(out_dir, staged, [out_dir / f"report.{fmt}" for fmt in formats])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def print_summary(report: Report, console: Console | None = None) -> None:
    """The terminal summary: the same tables as report.md. Text from CVAT is never read as markup."""
    from rich.console import Console
    from rich.markup import escape as plain
    from rich.table import Table

    console = console or Console()
    src, det, att = report.source, report.detection, report.attribute
    console.print(
        f"[bold]job {src.job}[/] (task {src.task}) on {plain(src.host)} · "
        f"reference {src.reference_mode} · model {plain(report.model_version or 'unknown')}"
    )
    for warning in report.warnings:
        console.print(f"[bold yellow]warning:[/] {plain(warning)}")
    title = f"{plain(report.settings.label)} detection"
    t = Table("TP", "FP", "FN", "precision", "recall", "F1", "AP", title=title)
    t.add_row(*(_fmt(v) for v in (det.tp, det.fp, det.fn, det.precision, det.recall, det.f1, det.ap)))
    console.print(t)
    t = Table("class", "precision", "recall", "F1", "support", title=plain(att.name))
    for v, m in att.per_class.items():
        t.add_row(plain(v), _fmt(m.precision), _fmt(m.recall), _fmt(m.f1), str(m.support))
    t.add_row("accuracy / macro F1", "", "", f"{_fmt(att.accuracy)} / {_fmt(att.macro_f1)}", "")
    console.print(t)
    for table in explain.tables(report):
        t = Table(*(plain(h) for h in table.header), title=plain(table.title), caption=plain(table.note))
        for row in table.rows:
            t.add_row(*(plain(c) for c in row))
        console.print(t)
