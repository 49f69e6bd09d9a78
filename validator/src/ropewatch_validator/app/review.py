"""``ropewatch review``: one CVAT issue per disagreement between the model and the people of a validated job.

A disagreement is a typed error of report.json on one box: ``flip_<label>_to_<model>`` (a prediction
whose value differs from its matched reference's) or ``missed_<value>`` (a reference of that value no
prediction matched). Each is keyed by (host, job, object, disagreement): the history store remembers
the issue opened for it (``ops.loop_store``), so a re-run opens no duplicate, and an open issue whose
disagreement is gone from the newer report is resolved. The most confident disagreements come first:
a model that is sure and still "wrong" often points at a label error, and the message says so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ropewatch_core.errors import InputError
from ropewatch_validator.ops.loop_store import OpenIssue
from ropewatch_validator.render.model import Report

if TYPE_CHECKING:
    from ropewatch_validator.cvat.fetch import Connection
    from ropewatch_validator.ops.history import HistoryStore

CONFIDENT = 0.9  # P(the model's value) at or above which the message says "check the label"


@dataclass(frozen=True)
class Disagreement:
    kind: str  # flip_wrong_to_correct, missed_wrong, ...
    frame: int
    object_key: str  # shape:<id> | track:<id>@<frame>
    box: tuple[float, float, float, float]
    label_value: str | None  # what the people say
    model_value: str | None  # what the model says (None: the model found no box)
    p_model: float | None  # P of the model's value, from --logs; None when untraced
    thr: float | None
    model_version: str | None
    request_id: str | None

    @property
    def position(self) -> list[float]:
        """The box as the polygon CVAT draws an issue with (corners clockwise from top left)."""
        x1, y1, x2, y2 = self.box
        return [x1, y1, x2, y1, x2, y2, x1, y2]


@dataclass(frozen=True)
class Options:
    types: tuple[str, ...] | None = None  # None: default_types(report)
    max_new: int | None = None
    assignee: str | None = None
    confident: float = CONFIDENT
    report_url: str = ""
    dry_run: bool = False


@dataclass(frozen=True)
class Plan:
    to_open: tuple[Disagreement, ...]
    to_resolve: tuple[OpenIssue, ...]
    kept: tuple[OpenIssue, ...]  # open issues whose disagreement still stands
    over_max: int  # disagreements --max left for a later run


@dataclass(frozen=True)
class Result:
    plan: Plan
    opened: tuple[tuple[Disagreement, int], ...] = ()
    failed: tuple[tuple[Disagreement, str], ...] = ()
    resolved: tuple[OpenIssue, ...] = ()
    resolve_failed: tuple[tuple[OpenIssue, str], ...] = ()
    messages: dict[str, str] = field(default_factory=dict)  # object_key|kind -> message (dry run too)


def default_types(values: Sequence[str]) -> tuple[str, ...]:
    """The dangerous ones: the unsafe value (first) labelled, the model saying another, or not finding it."""
    unsafe = values[0]
    return (*(f"flip_{unsafe}_to_{v}" for v in values[1:]), f"missed_{unsafe}")


def check_types(types: Sequence[str], values: Sequence[str]) -> None:
    known = [f"flip_{r}_to_{p}" for r in values for p in values if r != p] + [f"missed_{v}" for v in values]
    odd = [t for t in types if t not in known]
    if odd:
        raise InputError(
            f"--types {','.join(odd)}: not a disagreement of this report (known: {','.join(known)})"
        )


def _key(row: dict[str, Any]) -> str:
    if row.get("shape_id") is not None:
        return f"shape:{int(row['shape_id'])}"
    if row.get("track_id") is not None:
        return f"track:{int(row['track_id'])}@{int(row['frame'])}"
    return f"box:{int(row['frame'])}:{row['x1']:g},{row['y1']:g},{row['x2']:g},{row['y2']:g}"


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def disagreements(report: Report, types: Sequence[str]) -> list[Disagreement]:
    """Every disagreement of ``types`` in the report, most confident first (untraced ones after, by frame)."""
    settings = report.settings
    attr, values = settings.attribute, settings.values
    cols = report.objects.columns
    rows = [dict(zip(cols, r)) for r in report.objects.rows]
    traced = {
        (o.frame, o.shape_id): o
        for o in (report.trace.objects if report.trace else [])
        if o.shape_id is not None
    }
    out = []
    for kind in types:
        if kind.startswith("missed_"):
            value = kind[len("missed_") :]
            chosen = [
                r for r in rows if r["role"] == "reference" and r["error"] == "missed" and r[attr] == value
            ]
        else:
            chosen = [r for r in rows if r["role"] == "prediction" and r["error"] == kind]
        for r in chosen:
            missed = kind.startswith("missed_")
            t = traced.get((int(r["frame"]), int(r["shape_id"]))) if r.get("shape_id") is not None else None
            t = None if missed else t
            p_second = _num(t.p_correct) if t else None
            model_value = None if missed else r[attr]
            p_model = None
            if p_second is not None and model_value in values[:2]:
                p_model = p_second if model_value == values[1] else 1.0 - p_second
            label = value if missed else kind.split("_to_")[0][len("flip_") :]
            out.append(
                Disagreement(
                    kind=kind,
                    frame=int(r["frame"]),
                    object_key=_key(r),
                    box=(float(r["x1"]), float(r["y1"]), float(r["x2"]), float(r["y2"])),
                    label_value=label,
                    model_value=model_value,
                    p_model=p_model,
                    thr=_num(t.thr) if t else None,
                    model_version=(t.model_version if t else None) or report.model_version,
                    request_id=t.request_id if t else None,
                )
            )
    return sorted(out, key=lambda d: (d.p_model is None, -(d.p_model or 0.0), d.frame, d.object_key, d.kind))


def message(d: Disagreement, *, confident: float, report_url: str) -> str:
    """The issue's first comment: what each side says, how sure the model was, where the evidence is."""
    attr_pair = f"the label says {d.label_value}"
    if d.model_value is None:
        head = f"ropewatch [{d.kind}]: {attr_pair}, the model found no person here."
    else:
        head = f"ropewatch [{d.kind}]: {attr_pair}, the model says {d.model_value}."
    parts = [head]
    if d.p_model is not None and d.p_model >= confident:
        parts.append("Model confident: check the label.")
    facts = []
    if d.p_model is not None:
        facts.append(f"P({d.model_value}) = {d.p_model:.3f}")
    if d.thr is not None:
        facts.append(f"thr {d.thr:g}")
    facts.append(f"model {d.model_version or 'unknown'}")
    if d.request_id:
        facts.append(f"request_id {d.request_id}")
    parts.append(", ".join(facts) + ".")
    if report_url:
        parts.append(f"Report: {report_url}")
    return " ".join(parts)


def make_plan(found: Sequence[Disagreement], known: Sequence[OpenIssue], max_new: int | None) -> Plan:
    """What to open and what to resolve, from this report's disagreements and the open issues."""
    standing = {(d.object_key, d.kind) for d in found}
    opened = {(i.object_key, i.disagreement) for i in known}
    new = [d for d in found if (d.object_key, d.kind) not in opened]
    limit = len(new) if max_new is None else max_new
    return Plan(
        to_open=tuple(new[:limit]),
        to_resolve=tuple(i for i in known if (i.object_key, i.disagreement) not in standing),
        kept=tuple(i for i in known if (i.object_key, i.disagreement) in standing),
        over_max=max(0, len(new) - limit),
    )


def load_report(path: Path) -> Report:
    try:
        return Report.load(path)
    except OSError as exc:
        raise InputError(f"--report {path}: cannot read it ({exc.strerror or exc})") from None
    except ValueError as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise InputError(f"--report {path}: not a report.json of validate-job ({first})") from None


def review(report: Report, store: HistoryStore, conn: Connection | None, options: Options) -> Result:
    """Open the report's new disagreements as CVAT issues and resolve the ones that are gone.

    ``conn`` None only with ``dry_run`` (nothing is read from or written to CVAT, nothing stored).
    A deleted job or a report of another server is an error before anything is written; an issue
    CVAT refuses is counted in ``failed`` and the others still open.
    """
    from ropewatch_validator.cvat import issues as cvat
    from ropewatch_validator.ops import loop_store

    host, job = report.source.host.rstrip("/"), report.source.job
    if not report.objects.rows and report.counts.predictions + report.counts.references:
        # a summary (what history keeps) lists no boxes: reviewing it would resolve every open issue
        raise InputError(
            f"the report of job {job} has no per-object rows: give the report.json validate-job wrote"
        )
    types = options.types or default_types(report.settings.values)
    check_types(types, report.settings.values)
    found = disagreements(report, types)
    plan = make_plan(found, loop_store.open_issues(store, host, job), options.max_new)
    texts = {
        f"{d.object_key}|{d.kind}": message(d, confident=options.confident, report_url=options.report_url)
        for d in plan.to_open
    }
    if options.dry_run:
        return Result(plan=plan, messages=texts)
    if conn is None:
        raise InputError("review needs a CVAT connection unless --dry-run")
    if conn.host.rstrip("/") != host:
        raise InputError(f"the report is of job {job} on {host}, not on --server-host {conn.host}")
    cvat.job_body(conn, job)  # a deleted job fails here, before anything is written
    assignee = cvat.user_id(conn, options.assignee) if options.assignee else None
    opened, failed = [], []
    for d in plan.to_open:
        text = texts[f"{d.object_key}|{d.kind}"]
        try:
            issue_id = cvat.create_issue(conn, job, d.frame, d.position, text, assignee)
        except cvat.FetchError as exc:
            failed.append((d, str(exc)))
            continue
        loop_store.remember_issue(store, host, job, OpenIssue(issue_id, d.object_key, d.kind, d.frame))
        opened.append((d, issue_id))
    resolved, resolve_failed = [], []
    for issue in plan.to_resolve:
        try:
            cvat.resolve_issue(conn, issue.issue_id)
        except cvat.FetchError as exc:
            if not str(exc).endswith(": not found"):  # a person deleted the issue: nothing to resolve
                resolve_failed.append((issue, str(exc)))
                continue
        loop_store.mark_resolved(store, host, issue.issue_id)
        resolved.append(issue)
    return Result(
        plan=plan,
        opened=tuple(opened),
        failed=tuple(failed),
        resolved=tuple(resolved),
        resolve_failed=tuple(resolve_failed),
        messages=texts,
    )
