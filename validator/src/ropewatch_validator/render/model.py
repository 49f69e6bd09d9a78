"""report.json as a typed model (pydantic v2): one definition for the writer, the readers and its JSON Schema.

``validate-job`` builds a :class:`Report`; Markdown, HTML, history and alert rules read its fields,
and ``report.schema.json`` beside this module is generated from it (``python -m
ropewatch_validator.render.model``; a test keeps the committed file equal to the model). Keys are
only ever added (``schema_version``); reports written by older versions load unchanged.

Ratios are ``None`` where the denominator is zero, and a non-finite number read from anywhere becomes
``None`` too, so the model never holds NaN and its JSON is strict.
"""

from __future__ import annotations

import json
import math
import re
import types
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ropewatch_validator.evaluation.model import Part, Ratio, Settings
from ropewatch_validator.trace.model import Trace

SCHEMA_VERSION = "1.1"
SCHEMA_PATH = Path(__file__).with_name("report.schema.json")
FLIP = re.compile(r"^flip_(?P<ref>.+)_to_(?P<pred>.+)$")
# Per-object tables: everything in a report that grows with the number of boxes.
PER_OBJECT = ("objects", "trace.objects", "trace.scores", "trace.mistakes")


class Source(Part):
    host: str
    job: int
    task: int | None = None
    project: int | None = None
    job_updated_date: str | None = None
    job_state: str | None = (
        None  # digest of what changes the numbers besides updated_date (cvat.parse.deleted_digest)
    )
    reference_mode: Literal["manual", "gt-job", "reference-job"] = "manual"
    reference_job: int | None = None
    server_has_score: bool | None = None


class Counts(Part):
    frames: int
    frames_evaluated: int
    frames_deleted: int
    predictions: int
    references: int
    semi_auto: int
    skipped_shapes: dict[str, int]
    # objects, values and attribute entries left out of a metric, by reason (see the README)
    dropped: dict[str, int] = Field(default_factory=dict)


class Detection(Part):
    tp: int
    fp: int
    fn: int
    precision: Ratio
    recall: Ratio
    f1: Ratio
    ap: Ratio = None


class ClassMetrics(Part):
    precision: Ratio
    recall: Ratio
    f1: Ratio
    support: int


class Attribute(Part):
    """Confusion on matched pairs (rows = reference, columns = prediction, order ``labels``)."""

    name: str
    labels: list[str]
    confusion_matrix: list[list[int]]
    row_totals: list[int]
    column_totals: list[int]
    missed: dict[str, int]
    extra: dict[str, int]
    per_class: dict[str, ClassMetrics]
    accuracy: Ratio
    macro_f1: Ratio
    pairs_without_value: int


class Errors(BaseModel):
    """Error counts by type; the attribute flips are keys ``flip_<reference value>_to_<predicted value>``,
    one per ordered pair of the vocabulary, so their names follow ``settings.values``."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)
    __pydantic_extra__: dict[str, int] = Field(init=False)

    missed: int
    background: int
    localization: int
    duplicate: int
    edited_by_person: int

    @model_validator(mode="after")
    def _only_flips(self) -> Errors:
        odd = [k for k in self.model_extra or {} if not FLIP.match(k)]
        if odd:
            raise ValueError(f"unknown error type(s) {', '.join(odd)} (flips are flip_<value>_to_<value>)")
        return self

    def flip(self, ref: str, pred: str) -> int | None:
        """Reference value ``ref`` predicted as ``pred``; None when the report has no such pair."""
        return (self.model_extra or {}).get(f"flip_{ref}_to_{pred}")

    def counts(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.model_dump().items()}


class Bucket(Part):
    bucket: str
    references: int
    predictions: int
    missed: int
    false_positives: int
    flips: int
    recall: Ratio
    precision: Ratio


class PositionGrid(Part):
    rows: int
    cols: int
    errors: list[list[int]]


class Breakdowns(Part):
    size: list[Bucket]
    aspect: list[Bucket]
    occluded: list[Bucket]
    position_grid: PositionGrid


class FrameObject(Part):
    role: Literal["prediction", "reference"]
    error: str
    box: list[float]
    shape_id: int | None


class WorstFrame(Part):
    frame: int
    errors: int
    by_type: dict[str, int]
    objects: list[FrameObject]


class ErrorRange(Part):
    start: int
    stop: int
    errors: int


class ObjectRows(Part):
    """Per-object rows in pandas' "split" layout (field names are not repeated per row)."""

    columns: list[str]
    rows: list[list[Any]]


class PRCurve(Part):
    precision: list[float]
    recall: list[float]
    score: list[float]


class Report(Part):
    """report.json."""

    schema_version: str = SCHEMA_VERSION
    generated_at: str
    source: Source
    model_version: str | None = None
    settings: Settings
    counts: Counts
    detection: Detection
    attribute: Attribute
    errors: Errors
    breakdowns: Breakdowns
    worst_frames: list[WorstFrame]
    error_ranges: list[ErrorRange] = Field(default_factory=list)
    objects: ObjectRows
    pr_curve: PRCurve | None = None
    trace: Trace | None = None
    warnings: list[str] = Field(default_factory=list)  # what the summary and stderr say loudly

    # -- derived figures: the ones history columns and alert rules share --------------------------
    def dangerous_flips(self) -> int:
        """Unsafe-value references predicted as any other value (a person at risk reported as safe)."""
        unsafe = self.settings.unsafe
        return sum(self.errors.flip(unsafe, v) or 0 for v in self.settings.values if v != unsafe)

    def per_1000(self, count: int | None) -> float | None:
        """A count per 1,000 reference persons; None without references."""
        refs = self.counts.references
        return None if count is None or not refs else count / refs * 1000.0

    def metric(self, path: str) -> float | None:
        """A numeric metric by dotted path (``attribute.per_class.wrong.f1``) or derived name
        (:data:`DERIVED`); None when absent, null or not a number."""
        value = _derived(self, path) if _is_derived(path) else _walk(self, path.split("."))
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value) if math.isfinite(value) else None

    def with_trace(self, trace: Trace, model_version: str | None) -> Report:
        """This report with the ``--logs`` section (``trace.section.trace_job``) attached; what the join
        found wrong (records that join no frame) joins the loud warnings."""
        return self.model_copy(
            update={
                "trace": trace,
                "model_version": model_version,
                "warnings": [*self.warnings, *trace.warnings],
            }
        )

    # -- files -----------------------------------------------------------------------------------
    def to_json(self) -> str:
        """Strict JSON; ``trace`` appears only when traced (as before the model existed)."""
        return self.model_dump_json(exclude={"trace"} if self.trace is None else None)

    def summary(self) -> dict[str, Any]:
        """The report without its per-object tables (:data:`PER_OBJECT`; empty, not absent, so the
        summary is still a valid report): what history keeps."""
        trace = {"objects", "scores", "mistakes"}
        data = self.model_dump(mode="json", exclude={"objects": {"rows"}, "trace": trace})
        data["objects"]["rows"] = []
        if self.trace is None:
            del data["trace"]
        else:
            data["trace"] |= {
                "objects": [],
                "scores": {"logit": [], "p_correct": [], "y": []},
                "mistakes": [],
            }
        return data

    @classmethod
    def load(cls, path: str | Path) -> Report:
        return cls.model_validate_json(Path(path).read_bytes())


# Derived metric names for alert rules: flips per 1,000 reference persons.
DERIVED = ("dangerous_flips", "dangerous_flips_per_1000", "flips_<ref>_to_<pred>_per_1000")
_PER_1000 = re.compile(r"^flips_(?P<ref>.+)_to_(?P<pred>.+)_per_1000$")


def _is_derived(path: str) -> bool:
    return path in DERIVED[:2] or bool(_PER_1000.match(path))


def _derived(report: Report, path: str) -> float | None:
    if path == "dangerous_flips":
        return report.dangerous_flips()
    if path == "dangerous_flips_per_1000":
        return report.per_1000(report.dangerous_flips())
    m = _PER_1000.match(path)
    return report.per_1000(report.errors.flip(m["ref"], m["pred"])) if m else None


def _walk(node: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(node, BaseModel):
            if part in type(node).model_fields:
                node = getattr(node, part)
            elif part in (node.model_extra or {}):
                node = (node.model_extra or {})[part]
            else:
                return None
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    return node


def _unwrap(tp: Any) -> Any:
    """The model or container type behind ``X | None`` and ``Annotated[X, ...]``."""
    while True:
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            args = [a for a in get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def check_metric(path: str) -> str | None:
    """Why ``path`` names no numeric metric of :class:`Report` (None when it does). Class names in
    ``attribute.per_class.<class>`` and flip names are data, so any name is accepted there."""
    if _is_derived(path):
        return None
    tp: Any = Report
    for i, part in enumerate(parts := path.split(".")):
        tp = _unwrap(tp)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part)
            if field is not None:
                tp = field.annotation
            elif tp is Errors and FLIP.match(part):
                tp = int
            else:
                known = ", ".join(tp.model_fields)
                return f"{'.'.join(parts[: i + 1])!r} is not in report.json (known here: {known})"
        elif get_origin(tp) is dict:
            tp = get_args(tp)[1]
        else:
            return f"{'.'.join(parts[:i])!r} is not a group of metrics"
    tp = _unwrap(tp)
    if tp not in (int, float):
        return f"{path!r} is not a number in report.json"
    return None


def schema_text(model: type[BaseModel], name: str, version: str) -> str:
    """The committed JSON Schema text of a file model (``name``: report, backtest): stable key order,
    so the test that compares it with the model compares text."""
    schema = model.model_json_schema(mode="serialization")
    schema["$id"] = f"https://ropewatch.local/{name}/{version}/{name}.schema.json"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def json_schema() -> str:
    """The JSON Schema of report.json, as committed in ``report.schema.json``."""
    return schema_text(Report, "report", SCHEMA_VERSION)


if __name__ == "__main__":  # regenerate the committed schema
    SCHEMA_PATH.write_text(json_schema(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
