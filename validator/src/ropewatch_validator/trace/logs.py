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
from collections import Counter
from collections.abc import Iterable, Iterator, Set
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pandas as pd

from ropewatch_core.records import (
    FAILED,
    INFERENCE,
    MalformedLine,
    RecordError,
    RecordReader,
    check_inference,
    exact,
    reencoded,
)
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
    counts: Counter[str] = Counter()  # LogStats fields
    examples: list[str] = []  # the first malformed records, named by file and line
    req: dict[str, list] = {c: [] for c in REQUEST_COLUMNS}
    det: dict[str, list] = {c: [] for c in DETECTION_COLUMNS}

    def malformed(source: str, lineno: int, exc: Exception) -> None:
        counts["malformed"] += 1
        if len(examples) < 10:
            text = str(exc).splitlines()[0][:200] if str(exc) else ""
            examples.append(f"{source}:{lineno}: {type(exc).__name__}: {text}")

    for source, lines in _open_all(paths, stdin):
        reader = RecordReader()
        # the hot loop (millions of lines, most of them other frames' records): plain int counters
        records = other_frames = reencoded_other = 0
        for lineno, rec, text in reader.records(lines):
            records += 1
            if isinstance(rec, MalformedLine):
                malformed(source, lineno, rec)
                continue
            event = rec.get("event")
            if event == INFERENCE:
                img = rec.get("image")
                if keys is None or _wanted(img, keys):
                    try:
                        _append(exact(rec, text), source, lineno, req, det)
                        counts["inference"] += 1
                    except RecordError as exc:  # the contract's one check (check_inference)
                        malformed(source, lineno, exc)
                else:
                    other_frames += 1
                    reencoded_other += isinstance(img, dict) and reencoded(img)
            elif event == FAILED:
                counts["failed"] += 1
            else:
                counts["other_events"] += 1
        counts["records"] += records
        counts["other_frames"] += other_frames
        counts["reencoded_other"] += reencoded_other
        counts["lines"] += reader.lines
        counts["skipped"] += reader.skipped
        counts["parts_joined"] += reader.parts_joined
        counts["parts_incomplete"] += reader.parts_incomplete
    requests = pd.DataFrame(req)
    detections = pd.DataFrame(det)
    for frame in (requests, detections):
        frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    stats = LogStats(**counts, malformed_examples=examples)
    return LogData(requests=requests, detections=detections, stats=stats)


def _wanted(img: object, keys: Set[str]) -> bool:
    """Whether a record's image is one of ``keys``: by pixels, or by bytes unless they were re-encoded."""
    if not isinstance(img, dict):
        return False
    pixel = img.get("pixel_sha256")
    if isinstance(pixel, str) and pixel in keys:
        return True
    sha = img.get("sha256")
    return isinstance(sha, str) and sha in keys and not reencoded(img)


def _append(rec: dict, source: str, lineno: int, req: dict[str, list], det: dict[str, list]) -> None:
    """One inference record, checked once by the core's contract (``check_inference``: types, finite
    numbers in range, known values), then appended whole, so a bad one leaves no partial row."""
    c = check_inference(rec)
    head = {k: c[k] for k in REQUEST_COLUMNS if k in c and k != "detections"}
    head |= {
        "worker_id": None if c["worker_id"] is None else str(c["worker_id"]),
        "n_detections": len(c["detections"]),
        "source_file": source,
        "line": lineno,
    }
    for c_name in REQUEST_COLUMNS:
        req[c_name].append(head[c_name])
    for i, d in enumerate(c["detections"]):
        row = {**head, **d, "det_index": i}
        row["detector_score"] = float("nan") if d["detector_score"] is None else d["detector_score"]
        row["p_filter"] = float("nan") if d["p_filter"] is None else d["p_filter"]
        for c_name in DETECTION_COLUMNS:
            det[c_name].append(row[c_name])
