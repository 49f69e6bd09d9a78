"""Read the safety-rope function's JSON log records (see the README's function log record).

Input is what operators actually have: one or more files, or stdin (``-``), holding the raw
output of ``docker logs`` / ``kubectl logs`` / cvat-cli. Lines become records through the core's one
reader (``ropewatch_core.records.RecordReader``): a JSON object, or a prefix (a timestamp, a container
name, Nuclio's ``(I) processor``) followed by a JSON object that has an ``event`` key, parsed from the
first ``{`` so a prefix can never change the record; ``record_part`` lines (records longer than
PIPE_BUF) are joined. An inference record must also pass the core's contract (``check_inference``).
Everything else is counted as skipped, never silently dropped. Only
``event == "inference"`` records become rows; ``request_failed`` records are counted. One bad record
(a field of the wrong type, a timestamp that is not ISO 8601, JSON nested too deep to parse) is
rejected alone: counted as ``malformed`` with its place and reason in ``malformed_examples``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Set
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import pandas as pd

from ropewatch_core.records import FAILED, INFERENCE, MalformedLine, RecordReader, check_inference, reencoded
from ropewatch_core.spec import ATTRIBUTE
from ropewatch_validator.trace.model import LogStats

BOX = ("x1", "y1", "x2", "y2")
REQUEST_COLUMNS = (
    "request_id",
    "timestamp",
    "sha256",
    "pixel_sha256",
    "width",
    "height",
    "model_version",
    "model_sha256",
    "thr",
    "temperature",
    "worker_id",
    "boxes_given",
    "detector_threshold",
    "n_detections",
    "source_file",
    "line",
)
DETECTION_COLUMNS = (
    "request_id",
    "timestamp",
    "sha256",
    "pixel_sha256",
    "width",
    "height",
    "model_version",
    "thr",
    "temperature",
    "det_index",
    *BOX,
    "label",
    ATTRIBUTE,
    "p_correct",
    "logit",
    "detector_score",
    "stage",
    "p_filter",
    "shadow_value",
)


@dataclass
class LogData:
    requests: pd.DataFrame  # one row per inference record
    detections: pd.DataFrame  # one row per logged detection
    stats: LogStats


def _open_all(paths: Iterable[str | Path], stdin: IO[str] | None) -> Iterator[tuple[str, Iterable[str]]]:
    for p in paths:
        if str(p) == "-":
            yield "-", (stdin or sys.stdin)
        else:
            with open(p, encoding="utf-8", errors="replace") as fh:
                yield str(p), fh


def read_logs(
    paths: Iterable[str | Path], stdin: IO[str] | None = None, keys: Set[str] | None = None
) -> LogData:
    """Parse every line of ``paths`` (``-`` = stdin) into request and detection frames.

    With ``keys`` (the job's frame fingerprints), records whose ``sha256`` and ``pixel_sha256`` are
    both unknown are only counted (``other_frames``): memory stays bounded by the job, not the log.
    """
    stats = LogStats()
    req: dict[str, list] = {c: [] for c in REQUEST_COLUMNS}
    det: dict[str, list] = {c: [] for c in DETECTION_COLUMNS}
    for source, lines in _open_all(paths, stdin):
        reader = RecordReader()
        for lineno, rec in reader.read(lines):
            stats.records += 1
            if isinstance(rec, MalformedLine):
                _malformed(stats, source, lineno, rec)
                continue
            event = rec.get("event")
            if event == FAILED:
                stats.failed += 1
            elif event != INFERENCE:
                stats.other_events += 1
            elif keys is not None and not _wanted(rec, keys):
                stats.other_frames += 1
                stats.reencoded_other += _reencoded(rec)
            else:
                try:
                    _append(rec, source, lineno, req, det)
                    stats.inference += 1
                except (KeyError, TypeError, ValueError, IndexError, OverflowError) as exc:
                    _malformed(stats, source, lineno, exc)  # RecordError (the contract) is a ValueError
        stats.lines += reader.lines
        stats.skipped += reader.skipped
        stats.parts_joined += reader.parts_joined
        stats.parts_incomplete += reader.parts_incomplete
    requests = pd.DataFrame(req)
    detections = pd.DataFrame(det)
    for frame in (requests, detections):
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return LogData(requests=requests, detections=detections, stats=stats)


def _malformed(stats: LogStats, source: str, lineno: int, exc: Exception) -> None:
    stats.malformed += 1
    if len(stats.malformed_examples) < 10:
        text = str(exc).splitlines()[0][:200] if str(exc) else ""
        stats.malformed_examples.append(f"{source}:{lineno}: {type(exc).__name__}: {text}")


def _wanted(rec: dict, keys: Set[str]) -> bool:
    img = rec.get("image")
    if not isinstance(img, dict):
        return False
    names = ("pixel_sha256",) if reencoded(img) else ("sha256", "pixel_sha256")
    return any(isinstance(img.get(k), str) and img[k] in keys for k in names)


def _reencoded(rec: dict) -> bool:
    img = rec.get("image")
    return isinstance(img, dict) and reencoded(img)


def _text(value: object, name: str, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}")
    return value


def _timestamp(value: object) -> datetime:
    """An ISO 8601 time (``Z`` or an offset; naive = UTC), as the function's logger writes it."""
    text = _text(value, "timestamp")
    try:
        when = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"timestamp {str(text)[:40]!r} is not ISO 8601") from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _cascade_fields(d: dict) -> dict:
    """Which stage decided (``expert`` in records from before the cascade), the filter's P and the
    expert's shadow answer (NaN / None when absent)."""
    shadow = d.get("shadow")
    p_filter = d.get("p_filter")
    return {
        "stage": _text(d.get("stage", "expert"), "stage"),
        "p_filter": float("nan") if p_filter is None else float(p_filter),
        "shadow_value": None if shadow is None else _text(shadow["value"], "shadow.value"),
    }


def _append(rec: dict, source: str, lineno: int, req: dict[str, list], det: dict[str, list]) -> None:
    """Validate one inference record fully before appending, so a bad one leaves no partial row."""
    img = rec["image"]
    head = {
        "request_id": str(rec["request_id"]),
        "timestamp": _timestamp(rec["timestamp"]),
        "sha256": None if reencoded(img) else _text(img["sha256"], "image.sha256"),
        "pixel_sha256": _text(img.get("pixel_sha256"), "image.pixel_sha256", optional=True),
        "width": int(img["width"]),
        "height": int(img["height"]),
        "model_version": _text(rec.get("model_version"), "model_version", optional=True),
        "thr": float(rec["thr"]),
        "temperature": float(rec.get("temperature", 1.0) or 1.0),
    }
    rows = []
    for i, d in enumerate(rec["detections"]):
        x1, y1, x2, y2 = (float(v) for v in d["box"])
        score = d.get("detector_score")
        rows.append(
            {
                **head,
                "det_index": i,
                "x1": x1,
                "y1": y1,
                "x2": x2,
                "y2": y2,
                "label": _text(d.get("label"), "label", optional=True),
                ATTRIBUTE: _text(d[ATTRIBUTE], ATTRIBUTE),
                "p_correct": float(d["p_correct"]),
                "logit": float(d["logit"]),
                "detector_score": float("nan") if score is None else float(score),
                **_cascade_fields(d),
            }
        )
    extra = {
        "model_sha256": _text(rec.get("model_sha256"), "model_sha256", optional=True),
        "worker_id": None if rec.get("worker_id") is None else str(rec["worker_id"]),
        "boxes_given": bool(rec.get("boxes_given", False)),
        "detector_threshold": None
        if rec.get("detector_threshold") is None
        else float(rec["detector_threshold"]),
        "n_detections": len(rows),
        "source_file": source,
        "line": lineno,
    }
    check_inference(rec)  # the core's contract (finite numbers in range, known values) before appending
    for c in REQUEST_COLUMNS:
        req[c].append(head[c] if c in head else extra[c])
    for row in rows:
        for c in DETECTION_COLUMNS:
            det[c].append(row[c])
