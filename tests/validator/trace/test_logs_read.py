"""Reading function log lines: files, several files, stdin, raw docker/nuctl output."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import numpy as np
import pytest

from ropewatch_core.records import parse_line
from ropewatch_validator.trace.logs import read_logs
from support.tracegen import inference_record, noise_lines

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


def _rec(i: int, n_boxes: int = 2) -> dict:
    boxes = [[10.0 * i + k, 20.0, 30.0 + k, 40.0] for k in range(n_boxes)]
    return inference_record(
        sha256=f"{i:064x}",
        pixel_sha256=f"{i + 1:064x}",
        width=64,
        height=48,
        boxes=boxes,
        logits=[0.5 * k - 0.3 for k in range(n_boxes)],
        timestamp=T0,
        request_id=f"req-{i}",
    )


def test_files_stdin_and_noise(tmp_path) -> None:
    rng = np.random.default_rng(0)
    a = tmp_path / "a.log"
    a.write_text("\n".join([json.dumps(_rec(0)), *noise_lines(rng, 3, T0), json.dumps(_rec(1, 0))]) + "\n")
    b = tmp_path / "b.log"
    # docker logs --timestamps prefix and a nuctl-style prefix before the JSON object
    b.write_text(
        f"2026-11-23T10:00:01.000000000Z {json.dumps(_rec(2))}\n"
        f"safety-rope-1 | {json.dumps(_rec(3, 1))}\n"
        "{not json at all\n"
        "\n"
    )
    stdin = io.StringIO(json.dumps(_rec(4, 3)) + "\n")
    data = read_logs([a, b, "-"], stdin=stdin)
    s = data.stats
    assert (s.lines, s.inference, s.failed, s.other_events) == (10, 5, 1, 0)
    assert s.skipped == 4  # Nuclio's own line (prefix, no event), plain text, broken JSON, empty line
    assert s.records + s.skipped == s.lines
    assert list(data.requests["request_id"]) == ["req-0", "req-1", "req-2", "req-3", "req-4"]
    assert list(data.requests["n_detections"]) == [2, 0, 2, 1, 3]
    assert len(data.detections) == 8
    d = data.detections.iloc[0]
    src = _rec(0)["detections"][0]
    assert [d.x1, d.y1, d.x2, d.y2] == src["box"]
    assert d.p_correct == pytest.approx(src["p_correct"]) and d.logit == pytest.approx(src["logit"])
    assert d.sha256 == f"{0:064x}" and d.pixel_sha256 == f"{1:064x}" and d.model_version == "test-v1"
    assert str(data.requests["timestamp"].dt.tz) == "UTC"
    assert data.requests["source_file"].iloc[-1] == "-"


def test_malformed_inference_record_is_counted_not_half_written(tmp_path) -> None:
    bad = _rec(5)
    bad["detections"][1]["box"] = [1, 2, 3]  # too short: the whole record is rejected
    f = tmp_path / "c.log"
    f.write_text(json.dumps(bad) + "\n" + json.dumps(_rec(6)) + "\n")
    data = read_logs([f])
    assert data.stats.malformed == 1 and data.stats.inference == 1
    assert set(data.detections["request_id"]) == {"req-6"} and len(data.detections) == 2
    assert "c.log:1" in data.stats.malformed_examples[0]


def test_prefix_needs_an_event_key() -> None:
    assert parse_line('prefix {"a": 1}') is None
    assert parse_line('{"a": 1}') == {"a": 1}
    assert parse_line('x {"event": "inference"}') == {"event": "inference"}
    assert parse_line("[1, 2]") is None


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.log"):
        read_logs([tmp_path / "nope.log"])


def test_key_filter_counts_other_frames(tmp_path) -> None:
    f = tmp_path / "d.log"
    f.write_text("\n".join(json.dumps(_rec(i)) for i in range(6)) + "\n")
    data = read_logs([f], keys={f"{0:064x}", f"{6:064x}"})  # record 0 by bytes, record 5 by pixels (5 + 1)
    assert list(data.requests["request_id"]) == ["req-0", "req-5"]
    assert (data.stats.inference, data.stats.other_frames) == (2, 4)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (
            lambda r: r.update(timestamp="2026-11-23 10:00:00 +0000 UTC"),
            "RecordError: timestamp must be ISO 8601, got '2026-11-23 10",
        ),
        (
            lambda r: r["image"].update(sha256=["ab", "cd"]),
            "RecordError: image.sha256 must be a non-empty string, got list",
        ),
        (lambda r: r["image"].update(width=1e400), "RecordError: image.width must be a finite"),  # 1e400: inf
        (
            lambda r: r["detections"][0].update(safety_rope_use={"v": 1}),
            "RecordError: detections[0].safety_rope_use must be",
        ),
    ],
)
def test_one_bad_record_is_rejected_alone(tmp_path, damage, reason) -> None:
    bad = _rec(7)
    damage(bad)
    f = tmp_path / "d.log"
    f.write_text(json.dumps(_rec(6)) + "\n" + json.dumps(bad) + "\n" + json.dumps(_rec(8)) + "\n")
    for keys in (None, {f"{7:064x}", f"{6:064x}", f"{8:064x}"}):  # with and without the job's key filter
        data = read_logs([f], keys=keys)
        assert (data.stats.inference, data.stats.malformed) == (2, 1)
        assert list(data.requests["request_id"]) == ["req-6", "req-8"]
        assert data.stats.malformed_examples[0].startswith(f"{f}:2: {reason}")


def test_json_nested_too_deep_is_one_malformed_record(tmp_path) -> None:
    f = tmp_path / "e.log"
    deep = '{"event": "inference", "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    f.write_text(json.dumps(_rec(6)) + "\n" + deep + "\n")
    data = read_logs([f])
    assert (data.stats.lines, data.stats.records, data.stats.inference, data.stats.malformed) == (2, 2, 1, 1)
    assert data.stats.malformed_examples == [f"{f}:2: MalformedLine: JSON nested too deep to read"]


def test_kept_records_read_as_the_stdlib_reads_them(tmp_path) -> None:
    """The fast reader's one difference (an integer past 64 bits read as a float) never reaches a kept
    record, and a NaN literal (not strict JSON) is still a record the contract refuses, not a skipped line."""
    big = _rec(1)
    big["worker_id"] = 2**64 + 1
    nan = json.dumps(_rec(2)).replace('"logit": -0.3', '"logit": NaN')
    assert "NaN" in nan
    f = tmp_path / "big.log"
    f.write_text(json.dumps(big) + "\n" + nan + "\n")
    for keys in (None, {f"{1:064x}", f"{2:064x}"}):
        data = read_logs([f], keys=keys)
        assert list(data.requests["worker_id"]) == [str(2**64 + 1)]  # "18446744073709551617", not 1.8e19
        assert (data.stats.skipped, data.stats.malformed) == (0, 1)
        assert data.stats.malformed_examples[0].startswith(f"{f}:2: RecordError: detections[0].logit must be")
