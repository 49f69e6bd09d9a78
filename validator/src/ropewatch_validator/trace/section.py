"""`validate-job --logs`: add a ``trace`` section to report.json from the function's request logs.

Pipeline: read the log lines (``trace.logs``) → fingerprint every frame of the job as CVAT's lambda
manager sent it (``cvat.frames``) → pick one request per frame and match every shape to its logged
detection (``trace.join``) → lifecycle counts and the confusion against the original predictions
(``trace.lifecycle``) → ranking, calibration and threshold analysis on the recovered logits
(``trace.calibration``) → the most confident mistakes, with crops of the few frames they are on
(report.html shows them). ``trace.scores`` is what ``ropewatch checkpoint recalibrate`` refits
from. numpy/pandas/scipy are imported inside the
functions so that ``add_arguments`` keeps ``ropewatch --help`` fast.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from ropewatch_core.jsonio import plain
from ropewatch_core.spec import ATTRIBUTE, ATTRIBUTE_VALUES, PERSON_LABEL

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from ropewatch_validator.cvat.fetch import Connection, JobData
    from ropewatch_validator.cvat.frames import FetchFrame
    from ropewatch_validator.trace.logs import LogData

OBJECT_COLUMNS = (
    "frame",
    "shape_id",
    "source",
    "state",
    "request_id",
    "det_index",
    "model_version",
    "logged_value",
    "final_value",
    "p_correct",
    "logit",
    "detector_score",
    "thr",
    "temperature",
    "x1",
    "y1",
    "x2",
    "y2",
    "stage",  # filter | expert: who decided (review sample's strata read it)
)
TOP_MISTAKES = 8
MISTAKE_FIELDS = (
    "frame",
    "shape_id",
    "state",
    "request_id",
    "model_version",
    "final_value",
    "logged_value",
    "p_correct",
    "confidence",
    "thr",
    "x1",
    "y1",
    "x2",
    "y2",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--logs`` options of validate-job."""
    g = parser.add_argument_group("tracing predictions to requests")
    g.add_argument(
        "--logs", nargs="+", metavar="PATH|-", help="function log files ('-' = stdin); adds report.trace"
    )
    g.add_argument("--frame-workers", type=int, default=8, help="concurrent frame downloads (default 8)")
    g.add_argument(
        "--frame-cache",
        type=Path,
        default=Path(".ropewatch/frames"),
        help="frame and fingerprint cache folder (--logs, report thumbnails)",
    )
    g.add_argument(
        "--pixel-fingerprint",
        choices=("auto", "always"),
        default="auto",
        help="decode frames for pixel_sha256: auto = unless the task's chunks are an imageset",
    )
    g.add_argument(
        "--annotated-before",
        default=None,
        help="ISO time of the job's auto-annotation (default: the job's updated_date)",
    )
    g.add_argument("--required-recall-wrong", type=float, default=0.95)


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
) -> dict:
    """The ``trace`` block from already-read logs and frame fingerprints (pure; no I/O). ``values``:
    the job's two attribute values standing for the function's ``wrong`` and ``correct``; ``default``:
    the label's default value of ``attribute`` (see ``lifecycle`` ``attribute_unmapped``)."""
    from ropewatch_validator.trace import calibration as cal
    from ropewatch_validator.trace.join import join_frames, match_shapes
    from ropewatch_validator.trace.lifecycle import classify, scored, summarize
    from ropewatch_validator.trace.logs import BOX
    from ropewatch_validator.trace.stages import stage_summary

    live = job.frames.loc[~job.frames["deleted"].astype(bool), "frame"]
    fps = fingerprints[fingerprints["frame"].isin(live)]
    fj = join_frames(fps[fps["error"].isna()], logs.requests, cutoff)
    shapes = job.shapes[
        (job.shapes["label"] == label) & (job.shapes["type"] == "rectangle") & job.shapes["frame"].isin(live)
    ]
    rows = match_shapes(shapes, logs.detections, fj.frames, tol=tol, edited_iou=edited_iou, values=values)
    rows["state"] = classify(rows, attribute, default)
    rows["final_value"] = rows.get(attribute)
    if "log_x1" in rows:  # a deleted detection has no shape left: its box is the logged one
        for c in BOX:
            rows[c] = rows[c].fillna(rows[f"log_{c}"])
    # calibration is the expert's: filter-decided persons carry the filter's logit and temperature
    sc = scored(
        rows[rows["stage"].fillna("expert") == "expert"] if "stage" in rows else rows, attribute, values
    )
    thr = _mode(sc["thr"], 0.5)
    temperature = _mode(sc["temperature"], 1.0)
    versions = sorted(set(rows["model_version"].dropna().astype(str))) if "model_version" in rows else []
    chosen = logs.detections[logs.detections["request_id"].isin(fj.frames["request_id"].dropna())]
    objects = rows.reindex(columns=list(OBJECT_COLUMNS)).astype({"shape_id": "Int64", "det_index": "Int64"})
    failed = fingerprints[fingerprints["error"].notna()]
    return plain(
        {
            "logs": logs.stats.as_dict(),
            "frames": {
                **fj.stats,
                "download_failed": [
                    {"frame": int(f), "error": e}
                    for f, e in failed[["frame", "error"]].itertuples(index=False)
                ],
            },
            "settings": {
                "box_tolerance_px": tol,
                "edited_iou": edited_iou,
                "label": label,
                "attribute": attribute,
                "values": list(values),
                "ece": "top-label, 15 equal-width bins",
            },
            "model_versions": versions,
            "lifecycle": summarize(rows, attribute, values),
            "stages": stage_summary(rows, chosen, attribute),
            "calibration": cal.analyse(
                sc["logit"].to_numpy(),
                sc["y"].to_numpy(),
                temperature,
                thr,
                required_recall_wrong,
                values=values,
            )
            if len(sc)
            else None,
            "scores": {
                "logit": sc["logit"].tolist(),
                "p_correct": sc["p_correct"].tolist(),
                "y": sc["y"].tolist(),
            },
            "objects": objects.astype(object).where(objects.notna(), None).to_dict(orient="records"),
        }
    )


def enrich_report(
    report: dict,
    job: JobData,
    conn: Connection,
    log_paths: Sequence[str | Path],
    *,
    cache_dir: Path | None = None,
    workers: int = 8,
    annotated_before: str | None = None,
    required_recall_wrong: float = 0.95,
    stdin: IO[str] | None = None,
    pixel_fingerprint: str = "auto",
    progress: Callable[[int], None] | None = None,
    top_mistakes: int = TOP_MISTAKES,
) -> dict:
    """Add ``report["trace"]`` (and ``model_version`` when the report had none and the logs name one).

    ``trace.mistakes`` holds the ``top_mistakes`` most confident attribute errors with a crop of
    their frame; only those frames are downloaded a second time, and kept in ``cache_dir``.
    """
    import pandas as pd

    from ropewatch_validator.cvat.frames import cvat_frame_fetcher, frame_fingerprints, job_frame_fetcher
    from ropewatch_validator.trace.logs import read_logs

    settings = report.get("settings") or {}
    fetch = cvat_frame_fetcher(conn, job.job_id)
    cache_key: dict[str, Any] = {
        "host": str(job.host),
        "job_id": job.job_id,
        "chunks_updated_date": job.chunks_updated_date or "unknown",
    }
    pixels = needs_pixels(job.original_chunk_type, pixel_fingerprint)
    fingerprints = frame_fingerprints(
        fetch,
        job.frames.loc[~job.frames["deleted"].astype(bool), "frame"],
        cache_dir=cache_dir,
        workers=workers,
        pixels=pixels,
        progress=progress,
        **cache_key,
    )
    keys = set(fingerprints["sha256"].dropna()) | set(fingerprints["pixel_sha256"].dropna())
    logs = read_logs(log_paths, stdin=stdin, keys=keys)
    when = annotated_before or job.job_updated_date
    cutoff = pd.Timestamp(when) if when else None
    if cutoff is not None:  # a time without zone is taken as UTC, like the function's log timestamps
        cutoff = cutoff.tz_localize("UTC") if cutoff.tzinfo is None else cutoff.tz_convert("UTC")
    section = trace_section(
        job,
        logs,
        fingerprints,
        label=settings.get("label", PERSON_LABEL),
        attribute=settings.get("attribute", ATTRIBUTE),
        values=tuple(settings.get("values", ATTRIBUTE_VALUES)),
        cutoff=cutoff,
        required_recall_wrong=required_recall_wrong,
        default=label_default(
            job.labels, settings.get("label", PERSON_LABEL), settings.get("attribute", ATTRIBUTE)
        ),
    )
    crop_fetch = job_frame_fetcher(conn, job, cache_dir)
    section["mistakes"] = plain(
        mistake_panel(
            confident_mistakes(pd.DataFrame(section["objects"]), top_mistakes, section["settings"]["values"]),
            crop_fetch,
            workers,
        )
    )
    section["frames"]["pixel_fingerprint"] = pixels
    out = dict(report)
    out["trace"] = section
    if out.get("model_version") is None and len(section["model_versions"]) == 1:
        out["model_version"] = section["model_versions"][0]
    return out


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


def crop_png(rgb: np.ndarray, box: Sequence[float], *, margin: float = 0.5, max_side: int = 160) -> str:
    """Base64 PNG of the frame around ``box`` (``margin`` of its size on each side), the box drawn in red."""
    import base64
    import io

    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = (float(v) for v in box)
    mx, my = margin * max(x2 - x1, 1.0), margin * max(y2 - y1, 1.0)
    left, top = min(max(0, math.floor(x1 - mx)), w - 1), min(max(0, math.floor(y1 - my)), h - 1)
    right, bottom = max(min(w, math.ceil(x2 + mx)), left + 1), max(min(h, math.ceil(y2 + my)), top + 1)
    im = Image.fromarray(rgb[top:bottom, left:right])
    ImageDraw.Draw(im).rectangle([x1 - left, y1 - top, x2 - left, y2 - top], outline=(255, 0, 0), width=2)
    im.thumbnail((max_side, max_side))
    out = io.BytesIO()
    im.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def mistake_panel(mistakes: pd.DataFrame, fetch: FetchFrame, workers: int = 8) -> list[dict]:
    """Panel rows (truth, prediction, P(correct), thr, box) each with ``crop`` (base64 PNG, or None and
    ``crop_error`` when the frame could not be downloaded). Only the mistakes' frames are fetched,
    through the same endpoint as the fingerprints, at most ``workers`` at a time."""
    from concurrent.futures import ThreadPoolExecutor

    from ropewatch_core.image import load_frame
    from ropewatch_validator.trace.logs import BOX

    rows = mistakes.to_dict(orient="records")
    by_frame: dict[int, list[int]] = {}
    for i, r in enumerate(rows):
        by_frame.setdefault(int(r["frame"]), []).append(i)

    def crops(frame: int) -> dict[int, tuple[str | None, str | None]]:
        try:
            rgb = load_frame(fetch(frame)).rgb
            return {i: (crop_png(rgb, [rows[i][c] for c in BOX]), None) for i in by_frame[frame]}
        except Exception as exc:
            return {i: (None, f"{type(exc).__name__}: {exc}"[:300]) for i in by_frame[frame]}

    found: dict[int, tuple[str | None, str | None]] = {}
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(by_frame)))) as pool:
        for done in pool.map(crops, by_frame):
            found.update(done)
    return [
        {**{k: r.get(k) for k in MISTAKE_FIELDS}, "crop": found[i][0], "crop_error": found[i][1]}
        for i, r in enumerate(rows)
    ]
