"""`validate-job --logs`: add a ``trace`` section to report.json from the function's request logs.

Pipeline: read the log lines (``trace.logs``) → fingerprint every frame of the job as CVAT's lambda
manager sent it (``cvat.frames``) → pick one request per frame and match every shape to its logged
detection (``trace.join``) → lifecycle counts and the confusion against the original predictions
(``trace.lifecycle``) → ranking, calibration and threshold analysis on the recovered logits
(``trace.calibration``) → the most confident mistakes (``render.crops`` adds the crops report.html
shows). The result is the typed :class:`ropewatch_validator.trace.model.Trace`. ``trace.scores`` is
what ``ropewatch checkpoint recalibrate`` refits from. numpy/pandas/scipy are imported inside the
functions so that importing this module keeps ``ropewatch --help`` fast.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

from ropewatch_core.errors import InputError
from ropewatch_core.spec import ATTRIBUTE, ATTRIBUTE_VALUES, PERSON_LABEL
from ropewatch_validator.evaluation.model import Part
from ropewatch_validator.trace.model import (
    DownloadFailure,
    FrameStats,
    Mistake,
    Scores,
    Trace,
    TraceObject,
    TraceSettings,
)

if TYPE_CHECKING:
    import pandas as pd

    from ropewatch_validator.cvat.client import Connection
    from ropewatch_validator.cvat.fetch import JobData
    from ropewatch_validator.evaluation.match import Settings
    from ropewatch_validator.trace.logs import LogData

TOP_MISTAKES = 8
M = TypeVar("M", bound=Part)


def needs_pixels(original_chunk_type: str, mode: str = "auto") -> bool:
    """Whether the pixel fingerprint is worth a decode of every frame.

    An image task hands the function, and the API, the original file's bytes: ``sha256`` always
    joins. Video frames are re-encoded to PNG on every request and can change across CVAT/OpenCV
    versions; an unknown chunk type is treated like video.
    """
    return mode == "always" or original_chunk_type != "imageset"


def _mode(values: pd.Series, default: float) -> float:
    v = values.dropna()
    return float(v.mode().iloc[0]) if len(v) else default


def label_default(labels: dict, label: str, attribute: str) -> str | None:
    """The default value CVAT gives ``attribute`` of ``label`` (``fetch.Label.defaults``)."""
    return next((lb.defaults.get(attribute) for lb in labels.values() if lb.name == label), None)


def trace_section(
    job: JobData,
    logs: LogData,
    fingerprints: pd.DataFrame,
    *,
    label: str = PERSON_LABEL,
    attribute: str = ATTRIBUTE,
    cutoff: pd.Timestamp | None = None,
    tol: float = 0.5,
    edited_iou: float = 0.5,
    required_recall_wrong: float = 0.95,
    values: tuple[str, str] = ATTRIBUTE_VALUES,
    default: str | None = None,
    top_mistakes: int = TOP_MISTAKES,
) -> Trace:
    """The ``trace`` block from already-read logs and frame fingerprints (pure; no I/O). ``values``:
    the job's two attribute values standing for the function's ``wrong`` and ``correct``; ``default``:
    the label's default value of ``attribute`` (see ``lifecycle`` ``attribute_unmapped``); the
    ``top_mistakes`` most confident attribute errors are ``mistakes`` (without crops: ``render.crops``)."""
    from ropewatch_validator.trace import calibration as cal
    from ropewatch_validator.trace.join import join_frames
    from ropewatch_validator.trace.lifecycle import scored, summarize
    from ropewatch_validator.trace.stages import stage_summary

    live = job.frames.loc[~job.frames["deleted"].astype(bool), "frame"]
    fps = fingerprints[fingerprints["frame"].isin(live)]
    fj = join_frames(fps[fps["error"].isna()], logs.requests, cutoff)
    shapes = job.shapes[
        (job.shapes["label"] == label) & (job.shapes["type"] == "rectangle") & job.shapes["frame"].isin(live)
    ]
    rows = _objects(
        shapes, logs, fj.frames, attribute, default, tol=tol, edited_iou=edited_iou, values=values
    )
    # calibration is the expert's: filter-decided persons carry the filter's logit and temperature
    expert = rows["stage"].astype(object).fillna("expert") == "expert" if "stage" in rows else None
    sc = scored(rows if expert is None else rows[expert], attribute, values)
    thr = _mode(sc["thr"], 0.5)
    temperature = _mode(sc["temperature"], 1.0)
    versions = sorted(set(rows["model_version"].dropna().astype(str))) if "model_version" in rows else []
    chosen = logs.detections[logs.detections["request_id"].isin(fj.frames["request_id"].dropna())]
    columns = list(TraceObject.model_fields)
    objects = rows.reindex(columns=columns).astype({"shape_id": "Int64", "det_index": "Int64"})
    objects = objects.astype(object).where(objects.notna(), None)
    failed = fingerprints[fingerprints["error"].notna()]
    mistakes = confident_mistakes(objects, top_mistakes, values)
    calibration = (
        cal.analyse(
            sc["logit"].to_numpy(), sc["y"].to_numpy(), temperature, thr, required_recall_wrong, values=values
        )
        if len(sc)
        else None
    )
    return Trace(
        logs=logs.stats,
        frames=FrameStats(
            **fj.stats,
            download_failed=[
                DownloadFailure(frame=int(f), error=str(e))
                for f, e in failed[["frame", "error"]].itertuples(index=False)
            ],
        ),
        settings=TraceSettings(
            box_tolerance_px=tol,
            edited_iou=edited_iou,
            label=label,
            attribute=attribute,
            values=list(values),
            ece="top-label, 15 equal-width bins",
        ),
        model_versions=versions,
        lifecycle=summarize(rows, attribute, values),
        stages=stage_summary(rows, chosen, attribute),
        calibration=calibration,
        scores=Scores(
            logit=sc["logit"].tolist(), p_correct=sc["p_correct"].tolist(), y=sc["y"].astype(int).tolist()
        ),
        objects=_models(objects, TraceObject),
        mistakes=_models(mistakes, Mistake),
    )


def _models(frame: pd.DataFrame, model: type[M]) -> list[M]:
    """One ``model`` per row of ``frame``, from the columns the model has. Built column by column
    (``tolist``, then one dict per row): a job's tens of thousands of objects are the slowest part of
    the section otherwise; pydantic turns numpy scalars into plain values and NaN ratios into None."""
    names = [c for c in frame.columns if c in model.model_fields]
    return [model.model_validate(dict(zip(names, row))) for row in zip(*(frame[c].tolist() for c in names))]


def _objects(
    shapes: pd.DataFrame,
    logs: LogData,
    frames: pd.DataFrame,
    attribute: str,
    default: str | None,
    *,
    tol: float,
    edited_iou: float,
    values: tuple[str, str],
) -> pd.DataFrame:
    """Every shape matched to its logged detection (and every deleted detection), with its lifecycle
    ``state`` and ``final_value``; a deleted detection's box is the logged one."""
    from ropewatch_validator.trace.join import match_shapes
    from ropewatch_validator.trace.lifecycle import classify
    from ropewatch_validator.trace.logs import BOX

    rows = match_shapes(shapes, logs.detections, frames, tol=tol, edited_iou=edited_iou, values=values)
    rows["state"] = classify(rows, attribute, default)
    rows["final_value"] = rows.get(attribute)
    if "log_x1" in rows:
        for c in BOX:
            rows[c] = rows[c].fillna(rows[f"log_{c}"])
    return rows


@dataclass(frozen=True)
class TraceOptions:
    """What ``validate-job --logs`` traces: the log files ('-' = stdin) and how to read them."""

    logs: tuple[str | Path, ...]
    annotated_before: str | None = None  # ISO time of the auto-annotation (default: job updated_date)
    required_recall_wrong: float = 0.95
    pixel_fingerprint: str = "auto"  # or "always" (see needs_pixels)
    top_mistakes: int = TOP_MISTAKES  # how many confident mistakes report.html shows


def trace_job(
    job: JobData,
    conn: Connection,
    options: TraceOptions,
    settings: Settings,
    *,
    cache_dir: Path | None = None,
    workers: int = 8,
    stdin: IO[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> Trace:
    """The ``trace`` section of one job: its live frames fingerprinted (through ``cache_dir``), the
    logs read and joined (see :func:`trace_section`)."""
    import pandas as pd

    from ropewatch_validator.cvat.frames import cvat_frame_fetcher, frame_fingerprints
    from ropewatch_validator.trace.logs import read_logs

    fetch = cvat_frame_fetcher(conn, job.job_id)
    cache_key: dict[str, Any] = {
        "host": str(job.host),
        "job_id": job.job_id,
        "chunks_updated_date": job.chunks_updated_date or "unknown",
    }
    live = job.frames.loc[~job.frames["deleted"].astype(bool), "frame"]

    def fingerprinted(pixels: bool) -> tuple[pd.DataFrame, LogData]:
        """The live frames' fingerprints (through the cache) and the log records that name them."""
        fps = frame_fingerprints(
            fetch, live, cache_dir=cache_dir, workers=workers, pixels=pixels, progress=progress, **cache_key
        )
        keys = set(fps["sha256"].dropna()) | set(fps["pixel_sha256"].dropna())
        return fps, read_logs(options.logs, stdin=stdin, keys=keys)

    pixels = needs_pixels(job.original_chunk_type, options.pixel_fingerprint)
    fingerprints, logs = fingerprinted(pixels)
    warnings: list[str] = []
    if logs.stats.reencoded_other and not pixels:
        # records of cvat-sdk runs hash re-encoded frames: only the pixel hash can join them
        if "-" in map(str, options.logs):
            warnings.append(
                f"{logs.stats.reencoded_other} log records identify frames by pixels only (cvat-cli runs) "
                "and logs came on stdin, which cannot be read twice: re-run with --pixel-fingerprint always"
            )
        else:
            pixels = True
            fingerprints, logs = fingerprinted(pixels)
    when = options.annotated_before or job.job_updated_date
    cutoff = pd.Timestamp(when) if when else None
    if cutoff is not None:  # a time without zone is taken as UTC, like the function's log timestamps
        cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    values = tuple(settings.values)
    if len(values) != 2:
        raise InputError(f"--logs traces the function's two classes: --values must name two, got {values}")
    section = trace_section(
        job,
        logs,
        fingerprints,
        label=settings.label,
        attribute=settings.attribute,
        values=(values[0], values[1]),
        cutoff=cutoff,
        required_recall_wrong=options.required_recall_wrong,
        default=label_default(job.labels, settings.label, settings.attribute),
        top_mistakes=options.top_mistakes,
    )
    records = logs.stats.inference + logs.stats.other_frames
    if records and not section.frames.joined:
        warnings.append(
            f"--logs: {records} inference records read, but none joins a frame of job {job.job_id} "
            "(another job's logs, or frames changed since the run)"
        )
    return section.model_copy(
        update={
            "frames": section.frames.model_copy(update={"pixel_fingerprint": pixels}),
            "warnings": warnings,
        }
    )


# ------------------------------------------------------------------------------ most confident mistakes
def confident_mistakes(
    objects: pd.DataFrame, k: int = TOP_MISTAKES, values: Sequence[str] = ATTRIBUTE_VALUES
) -> pd.DataFrame:
    """Predicted objects whose logged value a person changed, most confident first.

    The confidence is the model's in the value it chose (P(correct) when it said ``values[1]``, the
    function's ``correct``, else 1 − P(correct)): a confident mistake is what a model card's "most
    confident mistakes" shows.
    """
    import numpy as np

    from ropewatch_validator.trace.lifecycle import PREDICTED

    if objects.empty:
        return objects.assign(confidence=[])
    pred = objects[
        objects["state"].isin(PREDICTED)
        & objects["final_value"].isin(values)
        & objects["logged_value"].isin(values)
        & objects["p_correct"].notna()
    ]
    bad = pred[pred["logged_value"] != pred["final_value"]]
    p = bad["p_correct"].astype(float)
    bad = bad.assign(confidence=np.where(bad["logged_value"] == values[1], p, 1.0 - p))
    return bad.sort_values(["confidence", "frame"], ascending=[False, True], kind="mergesort").head(k)
