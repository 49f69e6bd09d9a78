"""The Nuclio handler end to end through nuclio_sdk's Platform, Event and Response (the wire dict)."""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import uuid
from pathlib import Path

import nuclio_sdk
import nuclio_sdk.test
import numpy as np
import pytest
import yaml
from PIL import Image

from ropewatch_core.model.checkpoint import save_checkpoint
from ropewatch_validator.cli.demo import parse_records
from support.handler import FUNCTION_DIR, MAIN, Function, body_of, jpeg

LOG_KEYS = {
    "timestamp",
    "level",
    "event",
    "logger",
    "request_id",
    "worker_id",
    "function",
    "model_version",
    "model_sha256",
    "thr",
    "temperature",
    "image",
    "detector_threshold",
    "boxes_given",
    "detections",
    "timings_ms",
}


@pytest.fixture
def deploy(monkeypatch, tmp_path, capsys, person_detector_weights):
    def make(checkpoint: dict | Path, detector=True, **env) -> Function:
        model = tmp_path / "models" / "rope.pt"
        model.parent.mkdir(exist_ok=True)
        if isinstance(checkpoint, dict):
            save_checkpoint(checkpoint, model)
        else:
            model.write_bytes(Path(checkpoint).read_bytes())
        monkeypatch.setenv("MODEL_PATH", str(model))
        monkeypatch.setenv("DETECTOR_ARCH", "fasterrcnn_mobilenet_v3_large_320_fpn")
        if detector:
            monkeypatch.setenv("DETECTOR_PATH", str(person_detector_weights))
        else:
            monkeypatch.delenv("DETECTOR_PATH", raising=False)
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        return Function(capsys)

    return make


@pytest.fixture
def function(deploy, tiny_checkpoint):
    return deploy(tiny_checkpoint, MAX_PIXELS=1_000_000, DETECTOR_THRESHOLD=0.3)


def test_given_boxes_response_and_log_record(function):
    image = jpeg()
    boxes = [[10.123, 20.456, 60.0, 110.0], [80.0, 5.0, 150.5, 100.0]]
    wire, records = function.call(body_of(image, boxes=boxes), {"X-Request-Id": "req-42"})
    assert wire["status_code"] == 200 and wire["content_type"] == "application/json"
    assert wire["headers"]["X-Request-Id"] == "req-42"
    items = json.loads(wire["body"])
    assert isinstance(items, list) and len(items) == 2
    for item, box in zip(items, boxes):
        assert set(item) == {"confidence", "label", "points", "type", "attributes"}
        assert item["label"] == "person" and item["type"] == "rectangle" and item["confidence"] == 1.0
        assert item["points"] == [round(v, 2) for v in box]
        assert item["attributes"][0]["name"] == "safety_rope_use"
        assert item["attributes"][0]["value"] in ("wrong", "correct")
    (record,) = records
    assert set(record) >= LOG_KEYS and record["event"] == "inference" and record["level"] == "info"
    assert record["request_id"] == "req-42" and record["logger"] == "ropewatch.function"
    assert record["function"] == "safety-rope" and record["model_version"] == "tiny-v1"
    assert record["timestamp"].endswith("Z")
    assert record["model_sha256"] == hashlib.sha256(Path(os.environ["MODEL_PATH"]).read_bytes()).hexdigest()
    rgb = np.array(Image.open(io.BytesIO(image)).convert("RGB"))
    assert record["image"] == {
        "sha256": hashlib.sha256(image).hexdigest(),
        "pixel_sha256": hashlib.sha256(rgb.tobytes()).hexdigest(),
        "width": 160,
        "height": 120,
        "format": "JPEG",
        "bytes": len(image),
    }
    assert record["boxes_given"] is True and record["detector_threshold"] == 0.3
    assert set(record["timings_ms"]) == {"decode", "detect", "classify", "total"}
    for det, item in zip(record["detections"], items):
        assert det["box"] == item["points"] and det["safety_rope_use"] == item["attributes"][0]["value"]
        assert det["detector_score"] is None and det["label"] == "person"
        assert math.isclose(
            det["p_correct"], 1 / (1 + math.exp(-det["logit"] / record["temperature"])), abs_tol=1e-5
        )
        assert (det["p_correct"] >= record["thr"]) == (det["safety_rope_use"] == "correct")


def test_request_id_is_a_fresh_uuid4_without_a_sane_header(function):
    image = jpeg()
    ids = []
    for headers in ({}, {"X-Request-Id": "bad id with spaces"}, {"x-request-id": "x" * 500}):
        wire, (record,) = function.call(body_of(image, boxes=[]), headers)
        assert wire["headers"]["X-Request-Id"] == record["request_id"]
        assert uuid.UUID(record["request_id"]).version == 4
        ids.append(record["request_id"])
    assert len(set(ids)) == 3
    wire, _ = function.call(body_of(image, boxes=[]), {"x-request-id": "lower-case-ok"})
    assert wire["headers"]["X-Request-Id"] == "lower-case-ok"


def test_decoded_json_body_as_nuclio_delivers_it(function):
    wire, _ = function.call(body_of(jpeg(), boxes=[[1, 1, 30, 30]]), as_dict=True)
    assert wire["status_code"] == 200 and len(json.loads(wire["body"])) == 1


def test_detector_path_uses_request_threshold_and_default(function):
    wire, (record,) = function.call(body_of(jpeg(), threshold=0.9))
    items = json.loads(wire["body"])
    assert wire["status_code"] == 200 and items, "the all-person detector finds someone"
    assert record["boxes_given"] is False and record["detector_threshold"] == 0.9
    for item, det in zip(items, record["detections"]):
        assert det["detector_score"] >= 0.9 and item["confidence"] == det["detector_score"]
        assert det["box"] == item["points"] and 0 <= det["box"][0] < det["box"][2] <= 160
    _, (default,) = function.call(body_of(jpeg()))
    assert default["detector_threshold"] == 0.3  # DETECTOR_THRESHOLD when the request has none


def test_detector_sizes_are_a_setting_logged_at_startup(function, deploy, tiny_checkpoint):
    function.call(body_of(jpeg()))
    assert (function.startup[0]["detector_min_size"], function.startup[0]["detector_max_size"]) == (320, 640)
    sized = deploy(tiny_checkpoint, DETECTOR_MIN_SIZE=96, DETECTOR_MAX_SIZE=" 128 ")
    wire, (record,) = sized.call(body_of(jpeg()))
    assert (sized.startup[0]["detector_min_size"], sized.startup[0]["detector_max_size"]) == (96, 128)
    assert wire["status_code"] == 200 and record["detections"], "the all-person detector finds someone"
    for det in record["detections"]:  # boxes come back in frame pixels whatever size the detector ran at
        assert 0 <= det["box"][0] < det["box"][2] <= 160 and 0 <= det["box"][1] < det["box"][3] <= 120


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"DETECTOR_MIN_SIZE": "big"},
            "DETECTOR_MIN_SIZE must be a whole number of pixels from 32 to 4096, got 'big'",
        ),
        (
            {"DETECTOR_MAX_SIZE": "16"},
            "DETECTOR_MAX_SIZE must be a whole number of pixels from 32 to 4096, got '16'",
        ),
        (
            {"DETECTOR_MIN_SIZE": "-400"},
            "DETECTOR_MIN_SIZE must be a whole number of pixels from 32 to 4096, got '-400'",
        ),
        (
            {"DETECTOR_MIN_SIZE": "800", "DETECTOR_MAX_SIZE": "640"},
            "DETECTOR_MIN_SIZE 800 is larger than DETECTOR_MAX_SIZE 640",
        ),
        (
            {"DETECTOR_ARCH": "ssdlite320_mobilenet_v3_large", "DETECTOR_MAX_SIZE": "400"},
            "DETECTOR_MAX_SIZE is set, but DETECTOR_ARCH ssdlite320_mobilenet_v3_large has one fixed "
            "input size",
        ),
    ],
)
def test_bad_detector_size_is_one_init_failed_record_naming_the_variable(
    deploy, tiny_checkpoint, capsys, env, message
):
    function = deploy(tiny_checkpoint, **env)
    with pytest.raises(ValueError):
        function.call(body_of(jpeg()))
    (record,) = [r for r in parse_records(capsys.readouterr().out) if r["event"] == "init_failed"]
    assert (record["error"], record["message"]) == ("bad_config", f"ValueError: {message}")


BAD = [
    (b"{not json", "body_not_json"),
    (b"[1, 2]", "body_not_object"),
    (b"{}", "image_missing"),
    (json.dumps({"image": "@@@"}).encode(), "image_not_base64"),
    (json.dumps({"image": 17}).encode(), "image_not_base64"),
    (json.dumps({"image": ""}).encode(), "image_empty"),
    (body_of(b"GIF89a but not really"), "image_invalid"),
    ("too_large", "image_too_large"),
    (body_of(b"x", threshold=1.5), "bad_threshold"),
    (body_of(b"x", threshold=-0.1), "bad_threshold"),
    (body_of(b"x", threshold="0.5"), "bad_threshold"),
    (body_of(b"x", threshold=True), "bad_threshold"),
    (body_of(b"x", boxes="all"), "bad_boxes"),
    (body_of(b"x", boxes=[[1, 2, 3]]), "bad_boxes"),
    (body_of(b"x", boxes=[[5, 5, 1, 1]]), "bad_boxes"),
    (body_of(b"x", boxes=[[0, 0, "a", 4]]), "bad_boxes"),
    (body_of(b"x", boxes=[[0, 0, 1e300, 4]]), "bad_boxes"),
]


def test_every_bad_request_is_a_400_json_and_the_worker_keeps_serving(function):
    good = body_of(jpeg(), boxes=[[10, 10, 50, 50]])
    big = io.BytesIO()
    Image.new("L", (1200, 1000)).save(big, format="PNG")
    for body, code in BAD:
        body = body_of(big.getvalue()) if body == "too_large" else body
        wire, records = function.call(body, {"X-Request-Id": f"bad-{code}"})
        assert wire["status_code"] == 400, code
        payload = json.loads(wire["body"])
        assert payload["error"] == code and payload["request_id"] == f"bad-{code}" and payload["message"]
        assert "Traceback" not in wire["body"] and wire["headers"]["X-Request-Id"] == f"bad-{code}"
        (record,) = records
        assert record["level"] == "error" and record["event"] == "request_failed"
        assert record["error"] == code and record["request_id"] == f"bad-{code}" and record["message"]
        ok, _ = function.call(good)
        assert ok["status_code"] == 200 and len(json.loads(ok["body"])) == 1


def test_internal_failures_are_500_json_without_traceback(deploy, tiny_checkpoint, capsys):
    no_detector = deploy(tiny_checkpoint, detector=False)
    wire, (record,) = no_detector.call(body_of(jpeg()), {"X-Request-Id": "r500"})
    payload = json.loads(wire["body"])
    assert (
        wire["status_code"] == 500
        and payload["error"] == "detector_unavailable"
        and payload["request_id"] == "r500"
    )
    assert record["error"] == "detector_unavailable" and record["level"] == "error"
    ok, _ = no_detector.call(body_of(jpeg(), boxes=[[1, 1, 9, 9]]))
    assert ok["status_code"] == 200  # given boxes still work without a detector

    # a worker whose init_context never ran (no model): the handler still answers with JSON
    capsys.readouterr()
    context = nuclio_sdk.Context(worker_id=7)
    output = MAIN.handler(
        context, nuclio_sdk.Event(body=body_of(jpeg()), headers={"X-Request-Id": "r-broken"})
    )
    wire = nuclio_sdk.Response.from_entrypoint_output(json.dumps, output)
    payload = json.loads(wire["body"])
    assert wire["status_code"] == 500 and payload == {
        "error": "internal_error",
        "request_id": "r-broken",
        "message": "internal error; see the function log",
    }
    assert "Traceback" not in wire["body"]
    (record,) = parse_records(capsys.readouterr().out)
    assert (
        record["event"] == "request_failed"
        and record["worker_id"] == "7"
        and "AttributeError" in record["message"]
    )


def test_threshold_temperature_and_extra_label_rule_through_the_handler(deploy, fixed_logit_checkpoint):
    # head always outputs unknown=-2, correct=0.3, wrong=0.1: P(correct) is the softmax of `correct`
    # (ropewatch_core.decision), 0.5211 at T=1, 0.4502 at T=2, 0.5951 at T=0.5
    bias = (-2.0, 0.3, 0.1)
    three = dict(labels=("unknown", "correct", "wrong"), bias=bias)
    boxes = [[10, 10, 60, 90], [70, 20, 150, 110]]
    for thr, temperature, expected in [
        (0.52, 1.0, "correct"),
        (0.53, 1.0, "wrong"),
        (0.45, 2.0, "correct"),
        (0.46, 2.0, "wrong"),
        (0.59, 0.5, "correct"),
    ]:
        fn = deploy(fixed_logit_checkpoint(thr=thr, temperature=temperature, **three))
        wire, (record,) = fn.call(body_of(jpeg(), boxes=boxes))
        e = [math.exp(b / temperature) for b in bias]
        p = e[1] / sum(e)
        assert [i["attributes"][0]["value"] for i in json.loads(wire["body"])] == [expected, expected]
        assert record["thr"] == thr and record["temperature"] == temperature
        for det in record["detections"]:
            assert math.isclose(det["p_correct"], p, abs_tol=1e-5)
            assert math.isclose(det["logit"], temperature * math.log(p / (1 - p)), abs_tol=1e-5)


def test_hot_swap_good_then_broken_then_good(deploy, fixed_logit_checkpoint):
    fn = deploy(fixed_logit_checkpoint(bias=(1.0, -1.0), version="v1"))
    model = Path(os.environ["MODEL_PATH"])
    body = body_of(jpeg(), boxes=[[10, 10, 60, 90]])

    def served():
        wire, records = fn.call(body)
        inference = [r for r in records if r["event"] == "inference"]
        assert wire["status_code"] == 200 and len(inference) == 1
        return json.loads(wire["body"])[0]["attributes"][0]["value"], inference[0], records

    value, record, _ = served()
    assert (value, record["model_version"]) == ("wrong", "v1")
    save_checkpoint(fixed_logit_checkpoint(bias=(-1.0, 1.0), version="v2"), model)  # atomic replace
    value, record, _ = served()
    assert (value, record["model_version"]) == ("correct", "v2")
    assert record["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()

    tmp = model.with_name(".rope.pt.tmp")
    tmp.write_bytes(b"half-copied garbage")
    os.replace(tmp, model)
    value, record, records = served()
    assert (value, record["model_version"]) == ("correct", "v2")  # the old model keeps serving
    (failure,) = [r for r in records if r["event"] == "model_reload_failed"]
    assert (
        failure["level"] == "error" and str(model) in failure["message"] and failure["model_version"] == "v2"
    )
    _, _, records = served()
    assert [r["event"] for r in records] == ["inference"]  # the bad file is reported once, not every request

    no_thr = fixed_logit_checkpoint(version="v3")
    no_thr.pop("thr")
    save_checkpoint(no_thr, model)
    _, record, records = served()
    assert record["model_version"] == "v2" and "missing 'thr'" in records[0]["message"]
    save_checkpoint(fixed_logit_checkpoint(bias=(1.0, -1.0), version="v4"), model)
    value, record, _ = served()
    assert (value, record["model_version"]) == ("wrong", "v4")


def test_response_attributes_are_exactly_those_declared_in_function_yaml(function):
    wire, _ = function.call(body_of(jpeg(), boxes=[[10, 10, 60, 90], [1, 1, 5, 5]]))
    for name in ("function.yaml", "function-gpu.yaml"):
        spec = json.loads(
            yaml.safe_load((FUNCTION_DIR / name).read_text())["metadata"]["annotations"]["spec"]
        )
        declared = {label["name"]: {a["name"]: a["values"] for a in label["attributes"]} for label in spec}
        for item in json.loads(wire["body"]):
            assert item["label"] in declared
            for attribute in item["attributes"]:
                assert attribute["value"] in declared[item["label"]][attribute["name"]]


def test_cascade_record_names_the_stage_and_the_filter(deploy, tiny_checkpoint, tiny_filter_dict, tmp_path):
    from ropewatch_core.model.checkpoint import file_sha256

    path = tmp_path / "filter.pt"
    save_checkpoint({**tiny_filter_dict, "band": [0.0, 0.0]}, path)  # P >= 0 always: filter decides all
    function = deploy(tiny_checkpoint, FILTER_PATH=path, SHADOW_RATE=0)
    wire, (record,) = function.call(body_of(jpeg(), boxes=[[10, 20, 60, 110], [80, 5, 150, 100]]))
    assert wire["status_code"] == 200
    assert function.startup[0]["filter_version"] == "filter-v1"
    assert record["filter_version"] == "filter-v1" and record["filter_band"] == [0.0, 0.0]
    assert record["filter_sha256"] == file_sha256(path) and record["filter_temperature"] == 1.0
    assert "classify" not in record["timings_ms"] and record["timings_ms"]["filter"] >= 0
    for det in record["detections"]:
        assert det["stage"] == "filter" and det["safety_rope_use"] == "correct" and det["shadow"] is None
        assert det["p_filter"] == det["p_correct"] and 0 < det["p_filter"] < 1


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("SHADOW_RATE", "abc", "SHADOW_RATE must be a number in [0, 1], got 'abc'"),
        ("SHADOW_RATE", "1.5", "SHADOW_RATE must be a number in [0, 1], got '1.5'"),
        ("DETECTOR_THRESHOLD", "nan", "DETECTOR_THRESHOLD must be a number in [0, 1], got 'nan'"),
        ("MAX_PIXELS", "lots", "MAX_PIXELS must be an integer >= 1, got 'lots'"),
        ("NUM_WORKERS", "two", "NUM_WORKERS must be an integer >= 1, got 'two'"),
        ("TORCH_THREADS", "-3", "TORCH_THREADS must be an integer >= 1, got '-3'"),
    ],
)
def test_a_bad_number_in_the_env_is_named_in_the_init_failed_record(
    name, value, expected, monkeypatch, tiny_checkpoint, capsys
):
    monkeypatch.setenv("MODEL_PATH", str(tiny_checkpoint))
    monkeypatch.delenv("DETECTOR_PATH", raising=False)
    monkeypatch.setenv(name, value)
    context = nuclio_sdk.Context(logger=nuclio_sdk.Logger(20, "t"), worker_id="w-0")
    capsys.readouterr()
    with pytest.raises(ValueError, match=name):
        MAIN.init_context(context)
    (rec,) = [r for r in parse_records(capsys.readouterr().out) if r["event"] == "init_failed"]
    assert (rec["error"], rec["message"]) == ("bad_config", f"ValueError: {expected}")
