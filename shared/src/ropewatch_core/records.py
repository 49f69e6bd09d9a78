"""The function's log records: one contract, one writer, one reader (README, *The Nuclio function*).

Both entry points (the Nuclio handler and the cvat-sdk module) write through ``record_logger`` and the
validator reads through ``RecordReader``; ``inference_record.schema.json`` beside this module states the
contract of an ``inference`` record for other tools, and ``check_inference`` enforces the same rules.

**No record is lost when several workers share one stdout pipe** (every Nuclio worker of a container
does). POSIX makes a ``write(2)`` of at most ``PIPE_BUF`` (4096) bytes to a pipe atomic, so each line is
written with exactly one such call, newline included. A record whose line would be longer (a crowded
frame) becomes ``record_part`` lines, each of them one atomic write carrying ``part_of`` (a fresh id),
``part`` (0-based), ``parts`` and ``text``, a slice of the record's JSON; the reader joins them. Parts of
different records may interleave, but no line is ever cut, so every record comes back whole.
"""

from __future__ import annotations

import json
import math
import os
import re
import reprlib
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import Any, TextIO

import orjson
import structlog

from ropewatch_core import jsonio
from ropewatch_core.errors import InputError
from ropewatch_core.spec import ATTRIBUTE, ATTRIBUTE_VALUES, FUNCTION_NAME, PERSON_LABEL

_REPR = reprlib.Repr()  # keyword arguments only from Python 3.12
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict = 2, 4, 4
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = 40
PIPE_BUF = 4096  # POSIX minimum and Linux's value: the largest atomic pipe write
LOGGER_NAME = "ropewatch.function"
INFERENCE = "inference"
FAILED = "request_failed"
PART = "record_part"
SCHEMA_FILE = "inference_record.schema.json"


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``Type: text`` of an exception on one line, cut to ``limit`` characters: what a record or an
    error reply may quote of it (torch's messages are paragraphs; a bad input can be megabytes)."""
    text = " ".join(str(exc).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def echo(value: object, limit: int = 80) -> str:
    """A short ``repr`` of a bad input for a message that quotes it back (a 5 MB threshold must not give
    a 5 MB reply and log line): reprlib cuts long strings, ints and containers, then ``limit`` applies."""
    text = _REPR.repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class MalformedLine(InputError):
    """A line that is a JSON record but cannot be read (nested deeper than the parser's limit)."""


class RecordError(InputError):
    """An ``inference`` record that breaks the contract; the message names the first problem."""


def schema() -> dict:
    """The JSON Schema (draft 2020-12) of an ``inference`` record, shipped with this package."""
    return json.loads(resources.files("ropewatch_core").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


# --- writing ------------------------------------------------------------------------------------


def encode_lines(text: str, limit: int = PIPE_BUF) -> list[bytes]:
    """``text`` (one JSON object) as newline-terminated lines of at most ``limit`` bytes each: the record
    itself when it fits, else ``record_part`` lines whose ``text`` slices join back to ``text``."""
    whole = text.encode() + b"\n"
    if len(whole) <= limit:
        return [whole]
    part_of = uuid.uuid4().hex
    frame = '{"event": "%s", "logger": "%s", "part_of": "%s", "part": %d, "parts": %d, "text": %s}\n'
    overhead = len(frame % (PART, LOGGER_NAME, part_of, 0, 0, '""')) + 2 * 6  # part/parts up to 6 digits each
    slices, start = [], 0
    while start < len(text):
        size = limit - overhead
        while len(json.dumps(text[start : start + size])) > limit - overhead + 2:  # escapes grow the slice
            size = max(1, size * 9 // 10)
        slices.append(text[start : start + size])
        start += size
    return [
        (frame % (PART, LOGGER_NAME, part_of, i, len(slices), json.dumps(s))).encode()
        for i, s in enumerate(slices)
    ]


class PipeLogger:
    """structlog's final logger for the function: each line goes out in one ``write(2)`` (see above).

    The stream is resolved at each write (``sys.stdout`` by default): the logger is made once in
    init_context, but a test's or the demo's capture may swap ``sys.stdout`` later. A stream without a
    file descriptor (a capture buffer) gets one ``write()`` call per line instead.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    def msg(self, message: str) -> None:
        stream = self._stream or sys.stdout
        lines = encode_lines(message)
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):
            for line in lines:
                stream.write(line.decode())
            stream.flush()
            return
        stream.flush()  # nothing of ours may sit in a buffer behind the raw writes
        for line in lines:
            view = memoryview(line)
            while view:  # a pipe takes <= PIPE_BUF bytes whole; the loop only matters for regular files
                view = view[os.write(fd, view) :]

    log = debug = info = warning = error = critical = exception = msg


def _strict_json(event: dict, **_: Any) -> str:
    """structlog's serializer: strict JSON, a non-finite float becomes null (never NaN in a log)."""
    return jsonio.dumps(event)


_PROCESSORS: list[Any] = [
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.JSONRenderer(serializer=_strict_json),
]


def record_logger(worker_id: str, stream: TextIO | None = None) -> structlog.typing.FilteringBoundLogger:
    """The logger every record goes through: JSON lines at info and above, bound to the worker."""
    return structlog.wrap_logger(
        PipeLogger(stream), processors=_PROCESSORS, wrapper_class=structlog.make_filtering_bound_logger(20)
    ).bind(logger=LOGGER_NAME, function=FUNCTION_NAME, worker_id=worker_id)


def detection_fields(
    box: list[float],
    value: str,
    p_correct: float,
    logit: float,
    detector_score: float | None,
    stage: str = "expert",
    p_filter: float | None = None,
    shadow: dict | None = None,
) -> dict:
    """One element of an inference record's ``detections``; ``stage`` says which model decided
    (``filter`` or ``expert``), ``p_filter`` is the fast filter's P(correct) when one is deployed and
    ``shadow`` the expert's answer for a shadow-sampled filter-decided person (ropewatch_core.cascade)."""
    return {
        "box": box,
        "label": PERSON_LABEL,
        ATTRIBUTE: value,
        "p_correct": round(p_correct, 6),
        "logit": round(logit, 6),
        "detector_score": detector_score,
        "stage": stage,
        "p_filter": None if p_filter is None else round(p_filter, 6),
        "shadow": shadow,
    }


def inference_fields(
    *,
    model_version: str,
    model_sha256: str,
    thr: float,
    temperature: float,
    image: dict,
    detector_threshold: float,
    boxes_given: bool,
    detections: list[dict],
    timings_ms: dict,
) -> dict:
    """The fields of an ``inference`` record besides those the logger adds (timestamp, level, logger,
    function, worker_id, request_id): what both entry points pass to ``log.info(INFERENCE, ...)``."""
    return {
        "model_version": model_version,
        "model_sha256": model_sha256,
        "thr": thr,
        "temperature": temperature,
        "image": image,
        "detector_threshold": detector_threshold,
        "boxes_given": boxes_given,
        "detections": detections,
        "timings_ms": timings_ms,
    }


# --- reading ------------------------------------------------------------------------------------


_BIG_INT = re.compile(r"[\[:,]\s*-?\d{19}")  # an integer literal that may lie beyond 64 bits


def _object(line: str) -> tuple[dict, str] | None:
    """The JSON object on ``line`` and its text, read fast: orjson (3x the stdlib on a record line),
    and the stdlib for what orjson refuses (NaN and Infinity, lone surrogates, integers past 64 bits,
    nesting deeper than 1024), so a line is a record exactly when it was one for ``json``. The value
    read may differ from the stdlib's in one way only: an integer literal past 64 bits is a float
    (:func:`exact` undoes it where types matter). MalformedLine: JSON nested too deep to read."""
    text = line.strip()
    start = text.find("{")
    if start < 0:
        return None
    text = text[start:] if start else text
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        obj = _stdlib(text)
    if not isinstance(obj, dict) or (start > 0 and "event" not in obj):
        return None
    return obj, text


def _stdlib(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
    except RecursionError:
        raise MalformedLine("JSON nested too deep to read") from None


def exact(obj: dict, text: str) -> dict:
    """``obj`` (read from ``text`` by the fast path) as the stdlib reads it: the same dict unless the
    text may hold an integer literal past 64 bits, which the stdlib keeps an int (a ``worker_id``, a
    part index); only the records whose types matter pay for this check (the kept ones, the parts)."""
    if _BIG_INT.search(text) is None:
        return obj
    try:
        again = json.loads(text)
    except (ValueError, RecursionError):  # deeper than the stdlib reads: orjson's reading stands
        return obj
    return again if isinstance(again, dict) else obj


def parse_line(line: str) -> dict | None:
    """The JSON object on ``line``, or None. A prefix (a timestamp, a container name, Nuclio's console
    format) is allowed before an object that has an ``event`` key; the object is parsed from the first
    ``{``, so a prefix never changes the record. MalformedLine: JSON nested too deep to read."""
    found = _object(line)
    return None if found is None else exact(*found)


@dataclass
class _Pending:
    line: int
    parts: int
    texts: dict[int, str] = field(default_factory=dict)


@dataclass
class RecordReader:
    """Lines → records, ``record_part`` lines joined. ``skipped`` counts lines without a record,
    ``parts_incomplete`` the records of which some parts never came (counted at ``finish``)."""

    lines: int = 0
    skipped: int = 0
    parts_joined: int = 0
    parts_incomplete: int = 0
    _pending: dict[str, _Pending] = field(default_factory=dict)

    def read(self, lines: Iterable[str]) -> Iterator[tuple[int, dict | MalformedLine]]:
        """(line number, record) per record of ``lines``; a joined record has its first part's line; a
        line too deeply nested to parse comes as (line number, MalformedLine) for the caller to count."""
        for lineno, rec, text in self.records(lines):
            yield lineno, rec if isinstance(rec, MalformedLine) else exact(rec, text)

    def records(self, lines: Iterable[str]) -> Iterator[tuple[int, dict | MalformedLine, str]]:
        """As :meth:`read`, with each record's JSON text, and the record as the fast path read it: a
        reader of millions of lines (``read_logs``) calls :func:`exact` only on the records it keeps."""
        for lineno, line in enumerate(lines, 1):
            self.lines += 1
            try:
                found = _object(line)
            except MalformedLine as exc:
                yield lineno, exc, ""
                continue
            if found is None:
                self.skipped += 1
            elif found[0].get("event") != PART:
                yield lineno, found[0], found[1]
            else:
                joined = self._part(found[0], found[1], lineno)
                if joined is not None:
                    yield joined
        self.finish()

    def _part(self, rec: dict, line_text: str, lineno: int) -> tuple[int, dict, str] | None:
        rec = exact(rec, line_text)  # part indices are checked as ints
        key, i, n, text = rec.get("part_of"), rec.get("part"), rec.get("parts"), rec.get("text")
        if not (isinstance(key, str) and isinstance(i, int) and isinstance(n, int) and 0 <= i < n):
            self.skipped += 1
            return None
        if not isinstance(text, str):
            self.skipped += 1
            return None
        pending = self._pending.setdefault(key, _Pending(line=lineno, parts=n))
        pending.texts[i] = text
        if len(pending.texts) < pending.parts:
            return None
        del self._pending[key]
        try:
            whole = _object("".join(pending.texts[j] for j in range(pending.parts)))
        except MalformedLine:
            whole = None
        if whole is None:
            self.skipped += 1
            return None
        self.parts_joined += 1
        return pending.line, *whole

    def finish(self) -> None:
        """Count records still missing parts at the end of the input (then forget them)."""
        self.parts_incomplete += len(self._pending)
        self._pending.clear()


# --- the contract -------------------------------------------------------------------------------


def _finite(value: object, name: str, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)  # a 400-digit int raises OverflowError here, a ValueError
    if not (math.isfinite(number) and low <= number <= high):
        raise RecordError(f"{name} must be a finite number in [{low}, {high}], got {number}")
    return number


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise RecordError(f"{name} must be a non-empty string, got {type(value).__name__}")
    return value


def _timestamp(value: object) -> str:
    text = _text(value, "timestamp")
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RecordError(f"timestamp must be ISO 8601, got {text[:40]!r}") from None
    if when.tzinfo is None:
        raise RecordError(f"timestamp must carry a UTC offset, got {text[:40]!r}")
    return text


def reencoded(image: dict) -> bool:
    """Whether a record's ``image.sha256`` hashes bytes the caller made, not the bytes CVAT served
    (cvat-sdk's driver hands a function decoded pixels, which it re-encodes): then only
    ``pixel_sha256`` can find the frame, and the validator must not try the byte hash."""
    return image.get("source_bytes") is False


def check_inference(rec: dict) -> dict:
    """The fields of an ``inference`` record the validator uses, with the types and ranges it relies on
    (the JSON Schema's rules for them; the schema also pins formats such as 64-hex fingerprints): plain
    Python values, or RecordError naming the first problem."""
    try:
        return _check(rec)
    except (OverflowError, TypeError, KeyError) as exc:
        raise RecordError(f"{type(exc).__name__}: {exc}") from None


def _check(rec: dict) -> dict:
    img = rec.get("image")
    if not isinstance(img, dict):
        raise RecordError("image must be an object")
    dets = rec.get("detections")
    if not isinstance(dets, list):
        raise RecordError("detections must be a list")
    pixel = img.get("pixel_sha256")
    out = {
        "request_id": _text(rec.get("request_id"), "request_id"),
        "timestamp": _timestamp(rec.get("timestamp")),
        "sha256": None if reencoded(img) else _text(img.get("sha256"), "image.sha256"),
        "pixel_sha256": None if pixel is None else _text(pixel, "image.pixel_sha256"),
        "width": int(_finite(img.get("width"), "image.width", 1)),
        "height": int(_finite(img.get("height"), "image.height", 1)),
        "model_version": _text(rec.get("model_version"), "model_version"),
        "model_sha256": rec.get("model_sha256") if isinstance(rec.get("model_sha256"), str) else None,
        "thr": _finite(rec.get("thr"), "thr", 0.0, 1.0),
        "temperature": _finite(rec.get("temperature", 1.0), "temperature", 1e-12),
        "worker_id": rec.get("worker_id"),
        "boxes_given": rec.get("boxes_given") is True,
        "detector_threshold": _optional(rec.get("detector_threshold"), "detector_threshold"),
        "detections": [_detection(d, i) for i, d in enumerate(dets)],
    }
    return out


def _detection(d: object, i: int) -> dict:
    if not isinstance(d, dict):
        raise RecordError(f"detections[{i}] must be an object")
    box = d.get("box")
    if not (isinstance(box, list) and len(box) == 4):
        raise RecordError(f"detections[{i}].box must be [x1, y1, x2, y2]")
    x1, y1, x2, y2 = (_finite(v, f"detections[{i}].box") for v in box)
    value = d.get(ATTRIBUTE)
    if value not in ATTRIBUTE_VALUES:
        raise RecordError(f"detections[{i}].{ATTRIBUTE} must be one of {list(ATTRIBUTE_VALUES)}")
    score, label, shadow = d.get("detector_score"), d.get("label"), d.get("shadow")
    if label is not None and not isinstance(label, str):
        raise RecordError(f"detections[{i}].label must be a string, got {type(label).__name__}")
    if shadow is not None and not isinstance(shadow, dict):
        raise RecordError(f"detections[{i}].shadow must be an object")
    return {
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "label": label,
        ATTRIBUTE: value,
        "p_correct": _finite(d.get("p_correct"), f"detections[{i}].p_correct", 0.0, 1.0),
        "logit": _finite(d.get("logit"), f"detections[{i}].logit"),
        "detector_score": None if score is None else _finite(score, f"detections[{i}].detector_score", 0, 1),
        # the cascade (records from before it: the expert decided, no filter, no shadow answer)
        "stage": _text(d.get("stage", "expert"), f"detections[{i}].stage"),
        "p_filter": _optional(d.get("p_filter"), f"detections[{i}].p_filter", 0.0, 1.0),
        "shadow_value": None
        if shadow is None
        else _text(shadow.get("value"), f"detections[{i}].shadow.value"),
    }


def _optional(value: object, name: str, low: float = -math.inf, high: float = math.inf) -> float | None:
    return None if value is None else _finite(value, name, low, high)
