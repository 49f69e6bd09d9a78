"""report.html and the dashboard's pages, from the Jinja2 templates in ``templates/`` (package data).

Every page is self-contained: styles inline, charts as inline SVG, pictures as data: URIs, one small
inline script (the per-object table's filters); nothing is loaded from the network. The report page
is the same template whether written by validate-job or served by ``ropewatch serve``.

Scripts live in ``templates/*.js`` and are inlined verbatim; the Content-Security-Policy (:func:`csp`,
sent by the dashboard as a header and carried by every page in a ``<meta>`` tag, so an offline
report.html has it too) allows exactly those scripts by their SHA-256, never ``'unsafe-inline'``: a
``javascript:`` link or an injected ``<script>`` cannot run.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from typing import Any

import jinja2
from markupsafe import Markup

from ropewatch_validator.evaluation.baseline_stats import Better, Change, Comparisons
from ropewatch_validator.render import explain, links, svg
from ropewatch_validator.render.model import Report
from ropewatch_validator.render.thumbs import Thumbnail, region

MAX_OBJECT_ROWS = 5000  # the per-object table; every row is in report.json
# what the table shows of a row; a report whose rows lack some of them shows "–" there
TABLE_FIELDS = (
    "frame",
    "role",
    "error",
    "source",
    "iou",  # shown for matched objects only: an unmatched one has IoU 0 by definition
    "best_iou",
    "match",
    "score",
    "size",
    "shape_id",
    "track_id",
)


SCRIPTS = ("objects_filter",)  # templates/NAME.js, inlined as ``scripts.NAME``


@cache
def scripts() -> dict[str, Markup]:
    """Each script's text exactly as it is inlined (its hash in the CSP must match byte for byte)."""
    loader = jinja2.PackageLoader("ropewatch_validator.render", "templates")
    env = jinja2.Environment(loader=loader)
    return {name: Markup(loader.get_source(env, f"{name}.js")[0]) for name in SCRIPTS}


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@cache
def csp() -> str:
    """No request leaves the page (everything is inline: styles, SVG, data: images); only our own
    scripts run, named by hash."""
    hashes = " ".join(_sha256(str(js)) for js in scripts().values())
    return (
        f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {hashes}; "
        "base-uri 'none'; form-action 'self'"
    )


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ropewatch_validator.render", "templates"),
        autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(num=num, signed=signed)
    env.globals.update(job_url=links.job_url, task_url=links.task_url, project_url=links.project_url)
    env.globals.update(scripts=scripts(), csp=csp())
    return env


def num(value: Any, digits: int = 3) -> str:
    """A ratio or count as shown on every page: ``–`` for a missing value."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def signed(value: float | None, digits: int = 3) -> str:
    return "" if value is None else f"{value:+.{digits}f}"


def render(template: str, **context: Any) -> str:
    return environment().get_template(template).render(**context)


# ---------------------------------------------------------------------------------------- KPIs
@dataclass(frozen=True)
class Kpi:
    """A header card: the value, and its change against each baseline (``evaluation.baseline_stats``)."""

    key: str  # the card's data-kpi attribute
    title: str
    value: float | int | None
    metric: str  # the history metric (dotted path into report.json, or a derived name)
    better: Better = Better.HIGHER  # which direction is good, for colouring the change
    reference: Change | None = None  # against the reference version (pooled, unpaired)
    own: Change | None = None  # against the version's own earlier runs (drift)

    @property
    def digits(self) -> int:
        return 1 if self.key == "flips_per_1000" else 3


def kpis(report: Report, comparisons: Comparisons | None = None) -> list[Kpi]:
    """The header cards, each compared with both baselines of ``comparisons`` when given."""
    per_class, det, values = report.attribute.per_class, report.detection, report.settings.values
    safe = "/".join(v for v in values if v != report.settings.unsafe)
    cards = [
        Kpi(f"f1_{v}", f"F1 {v}", per_class[v].f1, f"attribute.per_class.{v}.f1")
        for v in values
        if v in per_class
    ]
    cards += [
        Kpi(
            "flips_per_1000",
            f"{report.settings.unsafe}→{safe} flips per 1,000 persons",
            report.per_1000(report.dangerous_flips()),
            "dangerous_flips_per_1000",
            better=Better.LOWER,
        ),
        Kpi("det_precision", "detection precision", det.precision, "detection.precision"),
        Kpi("det_recall", "detection recall", det.recall, "detection.recall"),
    ]
    if comparisons is not None:
        cards = [
            replace(c, reference=ref, own=own)
            for c in cards
            for ref, own in [
                comparisons.changes(c.metric, None if c.value is None else float(c.value), c.better)
            ]
        ]
    frames = report.counts.frames_evaluated
    return [*cards, Kpi("frames_evaluated", "frames evaluated", frames, "counts.frames_evaluated")]


def kpi_metrics(report: Report) -> list[str]:
    """The history metrics the cards compare with the baseline."""
    return [k.metric for k in kpis(report) if k.key != "frames_evaluated"]


# ------------------------------------------------------------------------------- worst frames
def _p_correct(report: Report) -> dict[tuple[int, int], float]:
    """P(correct) of each traced shape, by (frame, shape id), when the report has ``--logs``."""
    objects = report.trace.objects if report.trace else []
    return {
        (o.frame, o.shape_id): o.p_correct
        for o in objects
        if o.shape_id is not None and o.p_correct is not None
    }


def frame_views(report: Report, thumbnails: Mapping[int, Thumbnail] | None) -> list[dict]:
    """What each worst-frame figure draws: region, picture (if any), boxes with their captions."""
    src, probs = report.source, _p_correct(report)
    out = []
    for w in report.worst_frames:
        thumb = (thumbnails or {}).get(w.frame)
        box_region = thumb.region if thumb else region(o.box for o in w.objects)
        boxes = []
        middle = (box_region[0] + box_region[2]) / 2
        for o in w.objects:
            p = probs.get((w.frame, o.shape_id)) if o.shape_id is not None else None
            right = (o.box[0] + o.box[2]) / 2 > middle  # a caption grows towards the region's centre
            boxes.append(
                {
                    "role": o.role,
                    "error": o.error,
                    "box": o.box,
                    "text_x": o.box[2] if right else o.box[0],
                    "anchor": "end" if right else "start",
                    "caption": o.error + (f" · P(correct) {p:.2f}" if p is not None else ""),
                    "url": links.job_url(src.host, src.task, src.job, w.frame, shape_id=o.shape_id),
                }
            )
        scale = max((box_region[2] - box_region[0]) / 340.0, (box_region[3] - box_region[1]) / 240.0)
        out.append(
            {
                "frame": w.frame,
                "errors": w.errors,
                "by_type": w.by_type,
                "region": box_region,
                "thumb": thumb,
                "boxes": boxes,
                "scale": scale,
                "url": links.job_url(src.host, src.task, src.job, w.frame),
            }
        )
    return out


def object_table(report: Report, limit: int = MAX_OBJECT_ROWS) -> dict:
    """Rows of the per-object table (errors first, then by frame), with CVAT links; at most ``limit``."""
    cols, attribute, src = report.objects.columns, report.settings.attribute, report.source
    rows = [dict(zip(cols, r)) for r in report.objects.rows]
    rows.sort(key=lambda r: (r.get("error") == "tp", r.get("frame") or 0))
    shown = []
    for r in rows[:limit]:
        r.update({k: int(r[k]) for k in ("frame", "shape_id", "track_id") if r.get(k) is not None})
        url = links.job_url(
            src.host,
            src.task,
            src.job,
            r.get("frame"),
            shape_id=r.get("shape_id"),
            track_id=r.get("track_id"),
        )
        matched = r["match"] >= 0 if r.get("match") is not None else bool(r.get("iou"))
        iou = r.get("iou") if matched else None
        shown.append({**dict.fromkeys(TABLE_FIELDS), **r, "iou": iou, "value": r.get(attribute), "url": url})
    return {
        "rows": shown,
        "total": len(rows),
        "errors": sorted({r["error"] for r in rows if r.get("error")}),
        "classes": sorted({str(r[attribute]) for r in rows if r.get(attribute) is not None}),
    }


def pr_chart(report: Report) -> svg.Chart | None:
    curve = report.pr_curve
    if curve is None or not curve.recall:
        return None
    rec = [float(r) for r in curve.recall]
    return svg.line_chart(
        [f"recall {r:.2f}" for r in rec],
        [("precision", curve.precision, None)],
        y_range=(0.0, 1.0),
        x_values=rec,
        width=360,
        height=240,
    )


def report_page(
    report: Report,
    *,
    thumbnails: Mapping[int, Thumbnail] | None = None,
    comparisons: Comparisons | None = None,
    trace_figures: Mapping[str, str] | None = None,
    nav: bool = False,
    fired: Sequence[str] = (),
) -> str:
    """report.html. ``thumbnails`` by frame (worst frames), ``comparisons`` with both baselines,
    ``trace_figures`` (title → base64 PNG) for ``--logs``; ``nav`` adds the dashboard's menu, ``fired``
    names the alert rules the run fired (the dashboard's run page)."""
    src = report.source
    return render(
        "report.html",
        report=report,
        src=src,
        kpis=kpis(report, comparisons),
        has_baseline=comparisons is not None,
        fired=list(fired),
        frames=frame_views(report, thumbnails),
        objects=object_table(report),
        explained=explain.tables(report),
        pr=pr_chart(report),
        trace=report.trace,
        trace_figures=trace_figures or {},
        job_link=links.job_url(src.host, src.task, src.job),
        nav=nav,
    )
