"""report.json's ``trace`` section (``validate-job --logs``) as typed models.

Defined here, below ``render/``, so that :func:`ropewatch_validator.trace.section.trace_section` returns
the very model ``render.model.Report.trace`` holds: one definition for the writer, the readers and the
JSON Schema. Ratios are ``None`` where the denominator is zero or the number is not finite
(``evaluation.model.Ratio``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ropewatch_validator.evaluation.model import Part, Ratio


class LogStats(Part):
    """What happened to every log line read (report.json ``trace.logs``); ``skipped`` lines were not
    JSON records."""

    lines: int = 0
    records: int = 0
    skipped: int = 0
    parts_joined: int = 0  # records that arrived as record_part lines (longer than PIPE_BUF)
    parts_incomplete: int = 0  # records of which some parts never came
    inference: int = 0
    failed: int = 0
    other_events: int = 0
    other_frames: int = 0  # inference records of images not in the job (when filtering by keys)
    reencoded_other: int = 0  # of those, records keyed by pixels only (cvat-sdk runs): see trace.section
    malformed: int = 0  # inference records missing a field we need
    malformed_examples: list[str] = Field(default_factory=list)


class DownloadFailure(Part):
    frame: int
    error: str


class FrameStats(Part):
    """How the job's frames were joined to logged requests (``trace.join.join_frames``)."""

    frames: int
    joined: int
    by_sha256: int
    by_pixel_sha256: int
    unjoined: int
    unjoined_frames: list[int]
    reruns: int  # frames with more than one candidate request
    after_cutoff: int  # frames whose chosen request came after the cutoff (flagged)
    cutoff: str | None
    rule: str
    download_failed: list[DownloadFailure] = Field(default_factory=list)
    pixel_fingerprint: bool | None = None  # whether frames were decoded for pixel_sha256


class TraceSettings(Part):
    box_tolerance_px: float
    edited_iou: float
    label: str
    attribute: str
    values: list[str]  # the job's values standing for the function's wrong, correct
    ece: str


class LifecycleConfusion(Part):
    labels: list[str]
    rows: str
    columns: str
    matrix: list[list[int]]
    unusable_values: int


class UnjoinedShape(Part):
    frame: int
    shape_id: int | None
    source: str


class Lifecycle(Part):
    counts: dict[str, int]
    # "failed": the function's attribute never reached CVAT (every auto shape holds the label default)
    attribute_mapping: Literal["ok", "failed"] = "ok"
    final_objects: int
    work_saved_share: Ratio
    original_confusion: LifecycleConfusion
    unjoined_shapes: list[UnjoinedShape]


class OperatingPoint(Part):
    """One decision cut with its metrics; ``thr`` is in P(correct) space at ``temperature``."""

    name: str
    cut: Ratio
    thr: Ratio
    temperature: Ratio
    macro_f1: Ratio
    f1_wrong: Ratio
    f1_correct: Ratio
    recall_wrong: Ratio
    confusion: list[list[int]]


class FittedCalibration(Part):
    temperature: Ratio
    ece: Ratio
    nll: Ratio
    reliability: dict[str, Any]
    required_recall_wrong: float
    operating_points: dict[str, OperatingPoint]
    sweep: dict[str, Any]


class Calibration(Part):
    """Calibration, ranking and thresholds of the recovered logits (``trace.calibration.analyse``);
    curves are column lists, thinned for the report."""

    n: int
    n_correct: int
    n_wrong: int
    ece_kind: str
    n_bins: int
    temperature: Ratio
    thr: Ratio
    ece: Ratio
    nll: Ratio
    reliability: dict[str, Any]
    roc_auc: Ratio
    pr: dict[str, dict[str, Any]] | None
    fitted: FittedCalibration | None


class StageCounts(Part):
    n: int
    kept: int
    accuracy: Ratio


class Shadow(Part):
    n: int
    agreement_with_filter: Ratio
    n_with_final: int
    expert_accuracy: Ratio
    filter_accuracy: Ratio


class Stages(Part):
    """The fast-filter cascade per stage (``trace.stages``)."""

    requests: int
    requests_skipping_expert: int
    frame_skip_share: Ratio
    persons_by_filter_share: Ratio
    stages: dict[str, StageCounts]
    shadow: Shadow
    p_filter_mean: Ratio


class Scores(Part):
    """Traced objects with a final value: the function's logit z, P(values[1]) and y (1 = values[1])."""

    logit: list[float]
    p_correct: list[float]
    y: list[int]


class TraceObject(Part):
    """One shape (or deleted detection) of the job with its logged detection, if any."""

    frame: int
    shape_id: int | None = None
    source: str | None = None
    state: str
    request_id: str | None = None
    det_index: int | None = None
    model_version: str | None = None
    logged_value: str | None = None
    final_value: str | None = None
    p_correct: Ratio = None
    logit: Ratio = None
    detector_score: Ratio = None
    thr: Ratio = None
    temperature: Ratio = None
    x1: Ratio = None
    y1: Ratio = None
    x2: Ratio = None
    y2: Ratio = None
    stage: str | None = None  # filter | expert: who decided (review sample's strata read it)


class Mistake(Part):
    """A confident mistake for report.html, with a crop of its frame (or why there is none)."""

    frame: int
    shape_id: int | None = None
    state: str
    request_id: str | None = None
    model_version: str | None = None
    final_value: str | None = None
    logged_value: str | None = None
    p_correct: Ratio = None
    confidence: Ratio = None
    thr: Ratio = None
    x1: Ratio = None
    y1: Ratio = None
    x2: Ratio = None
    y2: Ratio = None
    crop: str | None = None  # base64 PNG
    crop_error: str | None = None


class Trace(Part):
    """``validate-job --logs``: the function's records joined to this job (see the README)."""

    logs: LogStats
    frames: FrameStats
    settings: TraceSettings
    model_versions: list[str]
    lifecycle: Lifecycle
    calibration: Calibration | None
    scores: Scores
    objects: list[TraceObject]
    mistakes: list[Mistake] = Field(default_factory=list)
    stages: Stages | None = None  # None without a fast filter in the records
    warnings: list[str] = Field(default_factory=list)  # the join's loud findings (also in report.warnings)
