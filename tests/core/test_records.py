"""ropewatch_core.records: the one writer, reader and schema of the function's records (issue 10.1, 10.7)."""

from __future__ import annotations

import io
import json
import os
import random
from datetime import datetime, timezone

import jsonschema
import pytest

from ropewatch_core.records import (
    PIPE_BUF,
    PipeLogger,
    RecordError,
    RecordReader,
    check_inference,
    echo,
    encode_lines,
    one_line,
    parse_line,
    record_logger,
    schema,
)
from support.tracegen import inference_record

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
VALIDATOR = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())


def crowded(n_boxes: int, request_id: str = "crowd") -> dict:
    return inference_record(
        sha256="a" * 64,
        pixel_sha256="b" * 64,
        width=1280,
        height=720,
        boxes=[[i, 10.5, i + 40.25, 300] for i in range(n_boxes)],
        logits=[(-1) ** i * 0.5 for i in range(n_boxes)],
        timestamp=T0,
        request_id=request_id,
    )


def test_a_record_that_fits_is_one_line_and_a_longer_one_parts_of_at_most_pipe_buf():
    small = json.dumps(crowded(2))
    assert encode_lines(small) == [small.encode() + b"\n"]
    big = json.dumps(crowded(200))  # about 33 KB: 200 persons in one frame
    lines = encode_lines(big)
    assert len(lines) > len(big) // PIPE_BUF and all(len(line) <= PIPE_BUF for line in lines)
    assert all(line.endswith(b"\n") and line.count(b"\n") == 1 for line in lines)
    parts = [json.loads(line) for line in lines]
    assert [(p["event"], p["part"], p["parts"]) for p in parts] == [
        ("record_part", i, len(lines)) for i in range(len(lines))
    ]
    assert "".join(p["text"] for p in parts) == big and len({p["part_of"] for p in parts}) == 1


def test_quote_heavy_text_still_fits():
    """Escaping can double a slice ('"' -> '\\"'); the slice shrinks until its line fits."""
    text = json.dumps({"event": "x", "q": '"\\' * 5000})
    lines = encode_lines(text)
    assert all(len(line) <= PIPE_BUF for line in lines)
    assert "".join(json.loads(line)["text"] for line in lines) == text


def test_reader_joins_interleaved_parts_and_counts_what_never_completed():
    first, second = (encode_lines(json.dumps(crowded(60, rid))) for rid in ("r1", "r2"))
    lines = [line.decode() for line in first + second]
    random.Random(3).shuffle(lines)  # two workers' parts in any order, with noise between
    lines.insert(5, "26.11.23 10:00:00.000 (I) processor Starting {}\n")
    reader = RecordReader()
    got = [rec for _, rec in reader.read(lines)]
    assert sorted(r["request_id"] for r in got) == ["r1", "r2"] and reader.parts_joined == 2
    assert got[0]["detections"] == crowded(60, got[0]["request_id"])["detections"]
    lost = RecordReader()
    assert list(lost.read([line.decode() for line in first[:-1]])) == []
    assert (lost.parts_incomplete, lost.skipped) == (1, 0)


def test_reader_flags_deeply_nested_lines_and_skips_prefixed_lines_without_event():
    reader = RecordReader()
    lines = [
        "[" * 100_000 + "]" * 100_000,
        '{"a":' * 50_000 + "1" + "}" * 50_000,
        'prefix {"a": 1}',
        '{"a": 1}',
    ]
    got = list(reader.read(lines))
    assert [type(rec).__name__ for _, rec in got] == ["MalformedLine", "dict"]  # a bare list holds no record
    assert got[0][0] == 2 and got[-1] == (4, {"a": 1}) and reader.skipped == 2


def test_pipe_logger_writes_each_line_in_one_write(monkeypatch):
    writes: list[bytes] = []
    read_fd, write_fd = os.pipe()
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(bytes(data)) or len(data))
    with os.fdopen(write_fd, "w") as stream:
        log = record_logger("7", stream)
        bound = ("event", "level", "timestamp", "logger", "function", "worker_id")
        log.info("inference", **{k: v for k, v in crowded(200).items() if k not in bound})
        log.error("request_failed", error="bad_boxes", message="x")
    os.close(read_fd)
    assert len(writes) > 2 and all(len(w) <= PIPE_BUF and w.endswith(b"\n") for w in writes)
    got = [rec for _, rec in RecordReader().read([w.decode() for w in writes])]
    assert [r["event"] for r in got] == ["inference", "request_failed"] and got[0]["worker_id"] == "7"


def test_records_are_strict_json_and_a_capture_buffer_works():
    out = io.StringIO()
    PipeLogger(out).msg('{"a": 1}')
    record_logger("0", out).info("model_loaded", thr=float("nan"), temperature=float("inf"))
    first, second = out.getvalue().splitlines()
    assert first == '{"a": 1}' and json.loads(second)["thr"] is None and "NaN" not in second


def test_function_records_validate_against_the_schema():
    rec = crowded(3)
    assert not [e.message for e in VALIDATOR.iter_errors(rec)]
    checked = check_inference(rec)
    assert checked["request_id"] == "crowd" and len(checked["detections"]) == 3


BAD = {
    "go timestamp": lambda r: r.update(timestamp="2026-11-23 10:00:00 +0000 UTC"),
    "sha256 list": lambda r: r["image"].update(sha256=["a"]),
    "width 0": lambda r: r["image"].update(width=0),
    "thr 400 digits": lambda r: r.update(thr=10**400),
    "thr above 1": lambda r: r.update(thr=1.5),
    "p_correct above 1": lambda r: r["detections"][0].update(p_correct=1.5),
    "box of 3": lambda r: r["detections"][0].update(box=[1, 2, 3]),
    "unknown value": lambda r: r["detections"][0].update(safety_rope_use="maybe"),
    "detections not a list": lambda r: r.update(detections={"0": 1}),
    "no request_id": lambda r: r.pop("request_id"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_contract_and_schema_refuse_the_same_records(case):
    rec = crowded(2)
    BAD[case](rec)
    with pytest.raises(RecordError) as err:
        check_inference(rec)
    assert "\n" not in str(err.value)
    assert list(VALIDATOR.iter_errors(rec)), f"the schema lets {case} through"


def test_contract_refuses_non_finite_numbers():
    """Strict JSON has no NaN (the writer turns it into null), but a reader must not trust the text."""
    rec = crowded(1)
    rec["detections"][0]["logit"] = float("nan")
    with pytest.raises(RecordError, match="finite"):
        check_inference(rec)


def test_messages_quote_bad_input_briefly():
    assert len(echo("x" * 5_000_000)) <= 80 and len(echo(10**400)) <= 80
    assert echo([["y" * 500_000, 0, 1, 1]]).startswith("[['yyy") and echo(0.5) == "0.5"
    message = one_line(RuntimeError("line one\n\n  line two " + "z" * 1000))
    assert message.startswith("RuntimeError: line one line two z") and len(message) <= 320


def _stdlib_reading(line: str) -> dict | None:
    """What a line meant before orjson read the logs: the stdlib's json from the first '{', with the
    prefix rule (an object after a prefix needs an event)."""
    text = line.strip()
    start = text.find("{")
    if start < 0:
        return None
    try:
        obj = json.loads(text[start:])
    except ValueError:
        return None
    return obj if isinstance(obj, dict) and (start == 0 or "event" in obj) else None


TRICKY = [
    '{"event": "inference", "worker_id": 18446744073709551617}',  # past 64 bits: the stdlib keeps an int
    '{"event": "x", "n": -9223372036854775809, "m": [1, 18446744073709551615]}',
    '{"event": "x", "thr": NaN, "t": -Infinity}',  # not strict JSON, yet a record for the stdlib
    '{"event": "x", "s": "\\ud800 lone surrogate"}',
    '{"event": "x", "v": 1e400, "w": 1e-400, "z": -0.0, "tiny": 5e-324}',
    '2026-11-23T10:00:00Z {"event": "x", "id": 123456789012345678901234567890}',
    '{"event": "x", "hash": "1234567890123456789012 digits inside a string"}',
    '{"a": 1} trailing text',
    '{"event": "x"}\x85',  # Unicode whitespace that str.strip removes and JSON does not allow
    '   {"a": [1, 2, {"b": null}], "a": "duplicate key"}   ',
    'x {"a": 1}',
    "{" * 3 + "}",
]


@pytest.mark.parametrize("line", TRICKY)
def test_fast_reading_is_the_stdlibs(line):
    """orjson reads the lines; every value, with its type (repr tells 1 from 1.0), is the stdlib's."""
    want = repr(_stdlib_reading(line))
    assert repr(parse_line(line)) == want
    got = list(RecordReader().read([line]))
    assert repr(got[0][1] if got else None) == want


def test_a_part_index_past_64_bits_is_an_int_as_before():
    """A part whose index the stdlib reads as a (huge) int waits for its other parts; read as a float it
    would have been skipped."""
    reader = RecordReader()
    line = json.dumps({"event": "record_part", "part_of": "p", "part": 0, "parts": 2**64 + 1, "text": "{"})
    assert list(reader.read([line])) == [] and (reader.skipped, reader.parts_incomplete) == (0, 1)
