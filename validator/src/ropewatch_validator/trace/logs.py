"""Read the safety-rope function's JSON log records into frames (see the README's function log record).

Input is what operators actually have: one or more files, or stdin (``-``), holding the raw
output of ``docker logs`` / ``kubectl logs`` / cvat-cli. Lines become records through the core's one
reader (``ropewatch_core.records.RecordReader``: prefixes allowed, ``record_part`` lines joined) and
inference records are checked by the core's contract (``check_inference``). Everything else is
counted as skipped, never silently dropped. Only ``event == "inference"`` records become rows;
``request_failed`` records are counted.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pandas as pd

from ropewatch_core.records import FAILED, INFERENCE, RecordError, RecordReader, check_inference
from ropewatch_core.spec import ATTRIBUTE

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
)


@dataclass
class LogStats:
    """What happened to every line read; ``skipped`` lines were not JSON records."""

    lines: int = 0
    records: int = 0
    skipped: int = 0
    parts_joined: int = 0  # records that arrived as record_part lines (longer than PIPE_BUF)
    parts_incomplete: int = 0  # records of which some parts never came
    inference: int = 0
    failed: int = 0
    other_events: int = 0
    other_frames: int = 0  # inference records of images not in the job (when filtering by keys)
    malformed: int = 0  # inference records missing a field we need
    malformed_examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return dict(self.__dict__)


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
            event = rec.get("event")
            if event == FAILED:
                stats.failed += 1
            elif event != INFERENCE:
                stats.other_events += 1
            elif keys is not None and not _wanted(rec, keys):
                stats.other_frames += 1
            else:
                try:
                    _append(rec, source, lineno, req, det)
                    stats.inference += 1
                except RecordError as exc:
                    stats.malformed += 1
                    if len(stats.malformed_examples) < 10:
                        stats.malformed_examples.append(f"{source}:{lineno}: {exc}")
        stats.lines += reader.lines
        stats.skipped += reader.skipped
        stats.parts_joined += reader.parts_joined
        stats.parts_incomplete += reader.parts_incomplete
    requests = pd.DataFrame(req)
    detections = pd.DataFrame(det)
    for frame in (requests, detections):
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True, format="ISO8601")
    return LogData(requests=requests, detections=detections, stats=stats)


def _wanted(rec: dict, keys: Set[str]) -> bool:
    img = rec.get("image")
    if not isinstance(img, dict):
        return False
    return any(isinstance(img.get(k), str) and img[k] in keys for k in ("sha256", "pixel_sha256"))


def _append(rec: dict, source: str, lineno: int, req: dict[str, list], det: dict[str, list]) -> None:
    """Check one inference record fully (the core's contract) before appending: no partial row."""
    checked = check_inference(rec)
    head = {c: checked[c] for c in REQUEST_COLUMNS if c in checked}
    extra = {"n_detections": len(checked["detections"]), "source_file": source, "line": lineno}
    for c in REQUEST_COLUMNS:
        req[c].append(head[c] if c in head else extra[c])
    for i, d in enumerate(checked["detections"]):
        row = {**head, **d, "det_index": i}
        row["detector_score"] = float("nan") if d["detector_score"] is None else d["detector_score"]
        for c in DETECTION_COLUMNS:
            det[c].append(row[c])
