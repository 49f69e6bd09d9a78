"""`validate-job --logs`: add a ``trace`` section to report.json from the function's request logs.

Pipeline: read the log lines (``validator.logs``) → fingerprint every frame of the job as CVAT's
lambda manager sent it (``validator.frames``) → pick one request per frame and match every shape
to its logged detection (``validator.join``) → lifecycle counts and the confusion against the
original predictions (``validator.lifecycle``) → ranking, calibration and threshold analysis on the
recovered logits (``validator.calibration``). ``trace.scores`` is what
``ropewatch checkpoint recalibrate`` refits from. numpy/pandas/scipy are imported inside the
functions so that ``add_arguments`` keeps ``ropewatch --help`` fast.
"""
from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from validator.frames import FetchFrame

OBJECT_COLUMNS = ("frame", "shape_id", "source", "state", "request_id", "det_index", "model_version", "logged_value",
                  "final_value", "p_correct", "logit", "detector_score", "thr", "temperature")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--logs`` options of validate-job."""
    g = parser.add_argument_group("tracing predictions to requests")
    g.add_argument("--logs", nargs="+", metavar="PATH|-", help="function log files ('-' = stdin); adds report.trace")
    g.add_argument("--frame-workers", type=int, default=8, help="concurrent frame downloads (default 8)")
    g.add_argument("--frame-cache", type=Path, default=Path(".ropewatch/frames"), help="fingerprint cache folder")
    g.add_argument("--annotated-before", default=None,
                   help="ISO time of the job's auto-annotation (default: the job's updated_date)")
    g.add_argument("--required-recall-wrong", type=float, default=0.95)


def jsonable(value: Any) -> Any:
    """Plain JSON: numpy scalars unwrapped, NaN/inf as null (strict JSON has no NaN)."""
    import numpy as np
    import pandas as pd

    def conv(v: Any) -> Any:
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, (list, tuple, np.ndarray)):
            return [conv(x) for x in v]
        if isinstance(v, np.integer):
            return int(v)
        if isinstance(v, (float, np.floating)):
            return float(v) if math.isfinite(float(v)) else None
        if isinstance(v, np.bool_):
            return bool(v)
        if isinstance(v, pd.Timestamp):
            return v.isoformat()
        if v is pd.NA or v is pd.NaT:
            return None
        return v

    return conv(value)


def chunks_updated_date(client, job_id: int) -> str:
    """The job's ``chunks_updated_date`` (read tolerantly, as raw JSON): the frame cache's version."""
    _, response = client.api_client.jobs_api.retrieve_data_meta(job_id, _parse_response=False)
    return str(json.loads(response.data).get("chunks_updated_date") or "unknown")


def _mode(values: pd.Series, default: float) -> float:
    v = values.dropna()
    return float(v.mode().iloc[0]) if len(v) else default


def trace_section(job, logs, fingerprints: pd.DataFrame, *, label: str = "person", attribute: str = "safety_rope_use",
                  cutoff: pd.Timestamp | None = None, tol: float = 0.5, edited_iou: float = 0.5,
                  required_recall_wrong: float = 0.95) -> dict:
    """The ``trace`` block from already-read logs and frame fingerprints (pure; no I/O)."""
    from validator import calibration as cal
    from validator.join import join_frames, match_shapes
    from validator.lifecycle import classify, scored, summarize

    live = job.frames.loc[~job.frames["deleted"].astype(bool), "frame"]
    fps = fingerprints[fingerprints["frame"].isin(live)]
    fj = join_frames(fps[fps["error"].isna()], logs.requests, cutoff)
    shapes = job.shapes[(job.shapes["label"] == label) & (job.shapes["type"] == "rectangle")
                        & job.shapes["frame"].isin(live)]
    rows = match_shapes(shapes, logs.detections, fj.frames, tol=tol, edited_iou=edited_iou)
    rows["state"] = classify(rows, attribute)
    rows["final_value"] = rows[attribute] if attribute in rows else None
    sc = scored(rows, attribute)
    thr = _mode(sc["thr"], 0.5)
    temperature = _mode(sc["temperature"], 1.0)
    versions = sorted(set(rows["model_version"].dropna().astype(str))) if "model_version" in rows else []
    objects = rows.reindex(columns=list(OBJECT_COLUMNS)).astype({"shape_id": "Int64", "det_index": "Int64"})
    failed = fingerprints[fingerprints["error"].notna()]
    return jsonable({
        "logs": logs.stats.as_dict(),
        "frames": {**fj.stats, "download_failed": [{"frame": int(f), "error": e}
                                                   for f, e in failed[["frame", "error"]].itertuples(index=False)]},
        "settings": {"box_tolerance_px": tol, "edited_iou": edited_iou, "label": label, "attribute": attribute,
                     "ece": "top-label, 15 equal-width bins"},
        "model_versions": versions,
        "lifecycle": summarize(rows, attribute),
        "calibration": cal.analyse(sc["logit"].to_numpy(), sc["y"].to_numpy(), temperature, thr,
                                   required_recall_wrong) if len(sc) else None,
        "scores": {"logit": sc["logit"].tolist(), "p_correct": sc["p_correct"].tolist(), "y": sc["y"].tolist()},
        "objects": objects.astype(object).where(objects.notna(), None).to_dict(orient="records"),
    })


def enrich_report(report: dict, job, client, log_paths: Sequence[str | Path], *, cache_dir: Path | None = None,
                  workers: int = 8, annotated_before: str | None = None, required_recall_wrong: float = 0.95,
                  stdin: IO[str] | None = None, fetch: FetchFrame | None = None,
                  progress: Callable[[int], None] | None = None) -> dict:
    """Add ``report["trace"]`` (and ``model_version`` when the report had none and the logs name one)."""
    import pandas as pd

    from validator.frames import cvat_frame_fetcher, frame_fingerprints
    from validator.logs import read_logs

    settings = report.get("settings") or {}
    fingerprints = frame_fingerprints(
        fetch or cvat_frame_fetcher(client, job.job_id), job.frames.loc[~job.frames["deleted"].astype(bool), "frame"],
        job_id=job.job_id, chunks_updated_date=chunks_updated_date(client, job.job_id), host=str(job.host),
        cache_dir=cache_dir, workers=workers, progress=progress)
    keys = set(fingerprints["sha256"].dropna()) | set(fingerprints["pixel_sha256"].dropna())
    logs = read_logs(log_paths, stdin=stdin, keys=keys)
    when = annotated_before or job.job_updated_date
    cutoff = pd.Timestamp(when) if when else None
    if cutoff is not None:  # a time without zone is taken as UTC, like the function's log timestamps
        cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    section = trace_section(job, logs, fingerprints, label=settings.get("label", "person"),
                            attribute=settings.get("attribute", "safety_rope_use"), cutoff=cutoff,
                            required_recall_wrong=required_recall_wrong)
    out = dict(report)
    out["trace"] = section
    if out.get("model_version") is None and len(section["model_versions"]) == 1:
        out["model_version"] = section["model_versions"][0]
    return out
