"""The function under Nuclio 1.14.1's real Python wrapper, run by ../shared/nuclio/processor.py (issue 10).

Each test starts the processor stand-in with several workers on a free loopback port and reads the
container log through a pipe, as Docker does. The tiny checkpoint keeps the model cheap, so what is
measured is the runtime: concurrency, the shared stdout pipe, hot-swaps, start-up failures and shutdown.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jsonschema
import pytest
import requests

from ropewatch_core.model.checkpoint import save_checkpoint
from ropewatch_core.records import PIPE_BUF, RecordReader, schema
from ropewatch_validator.trace.logs import read_logs
from support.nuclio import png_b64


def records(fn) -> list[dict]:
    """The function's own records in the container log (not the processor's JSON-tailed lines)."""
    return [
        rec for _, rec in RecordReader().read(fn.log_lines()) if rec.get("logger") == "ropewatch.function"
    ]


def assert_strict_json(fn) -> None:
    """Every line of ours parses as strict JSON: no NaN or Infinity constant anywhere."""

    def refuse(constant: str):
        raise AssertionError(f"non-finite {constant} in a record")

    ours = [line for line in fn.log_lines() if line.startswith('{"logger":"ropewatch.function"')]
    assert ours
    for line in ours:
        json.loads(line, parse_constant=refuse)


def read_container_log(fn, tmp_path: Path):
    """The container log as `validate-job --logs` reads it: a file handed to the same reader."""
    path = tmp_path / "container.log"
    path.write_text(fn.log(), encoding="utf-8")
    return read_logs([path])


def test_stress_two_workers_lose_no_record(nuclio, tiny_checkpoint, tmp_path):
    """2 workers share stdout; 2,000 concurrent requests, every 10th with 40 boxes (a record longer than
    PIPE_BUF, written as record_part lines). Before: 18% of records glued and skipped (538 of 3,000)."""
    fn = nuclio({"MODEL_PATH": tiny_checkpoint, "NUM_WORKERS": 2}, workers=2).wait_ready()
    n, image = 2000, png_b64(32, 24)
    crowd = [[x, 1, x + 2, 20] for x in range(0, 30, 1)][:30] + [[1, y / 4, 20, y / 4 + 3] for y in range(10)]
    local = threading.local()

    def one(i: int) -> tuple[str, int]:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        boxes = crowd if i % 10 == 0 else [[1, 2, 20, 22], [5, 5, 30, 20]]
        rid = f"stress-{i}"
        return rid, fn.post({"image": image, "boxes": boxes}, session=session, request_id=rid).status_code

    with ThreadPoolExecutor(16) as pool:
        answers = dict(pool.map(one, range(n)))
    assert fn.stop() == 0
    assert set(answers.values()) == {200}
    assert max(
        len(line.encode()) + 1 for line in fn.log_lines() if '"logger":"ropewatch.function"' in line
    ) <= (PIPE_BUF)
    logs = read_container_log(fn, tmp_path)
    assert logs.stats.inference == n and logs.stats.malformed == 0 and logs.stats.parts_incomplete == 0
    assert logs.stats.parts_joined == n // 10  # 200 crowded records, each joined from its parts
    assert set(logs.requests["request_id"]) == set(answers)  # every request, each exactly once
    assert sorted(logs.requests["n_detections"].value_counts().items()) == [(2, n - n // 10), (40, n // 10)]
    assert set(logs.requests["worker_id"]) == {"0", "1"}  # both workers wrote
    check = jsonschema.Draft202012Validator(schema(), format_checker=jsonschema.FormatChecker())
    inference = [r for r in records(fn) if r["event"] == "inference"]
    assert len(inference) == n and not [e.message for r in inference for e in check.iter_errors(r)]


def _swap(path: Path, checkpoint: dict) -> None:
    save_checkpoint(checkpoint, path)  # temp file + rename, as deployments must


BAD_SWAPS = {
    # name: (change, text of the model_reload_failed message); each passed inspect/hot-swap before
    "img_size not a patch multiple": (
        lambda c: c["config"].update(img_size=[64, 40]),
        "is not a multiple of the backbone's patch size 16",
    ),
    "img_size bools": (lambda c: c["config"].update(img_size=[True, True]), "integers in [1, 4096]"),
    "state entry int": (lambda c: c["state_dict"].update({"head.1.bias": 5}), "must be a dict of tensors"),
    "thr 400 digits": (lambda c: c.update(thr=10**400), "'thr' must be a number in [0, 1]"),
    "backbone_name int": (lambda c: c["config"].update(backbone_name=5), "config.backbone_name must be"),
    "nan weights": (lambda c: c["state_dict"]["head.3.bias"].fill_(float("nan")), "non-finite logits"),
}


def test_bad_checkpoints_are_refused_on_hot_swap_and_the_old_model_keeps_serving(
    nuclio, tiny_checkpoint_dict, tmp_path
):
    import copy

    model = tmp_path / "models" / "rope.pt"
    _swap(model, tiny_checkpoint_dict)
    fn = nuclio({"MODEL_PATH": model, "NUM_WORKERS": 2}, workers=2).wait_ready()
    body = {"image": png_b64(64, 48), "boxes": [[1, 2, 30, 40]]}
    for name, (change, _) in BAD_SWAPS.items():
        bad = copy.deepcopy(tiny_checkpoint_dict)
        change(bad)
        bad["version"] = f"bad {name}"
        _swap(model, bad)
        for _ in range(4):  # both workers see the new file, refuse it once, and keep serving tiny-v1
            assert fn.post(body).status_code == 200
    good = copy.deepcopy(tiny_checkpoint_dict) | {"version": "tiny-v2"}
    _swap(model, good)
    answers = [fn.post(body, request_id=f"after-{i}") for i in range(4)]
    assert fn.stop() == 0
    assert {r.status_code for r in answers} == {200}
    recs = records(fn)
    failed = [r for r in recs if r["event"] == "model_reload_failed"]
    for name, (_, expected) in BAD_SWAPS.items():
        messages = {r["message"] for r in failed if expected in r["message"]}
        assert len(messages) == 1, name  # the same one line from each worker that saw the file
        (message,) = messages
        assert message.startswith(f"checkpoint {model}: ") and "\n" not in message
    assert all(r["model_version"] == "tiny-v1" for r in failed)  # the model that kept serving
    served = {r["request_id"]: r["model_version"] for r in recs if r["event"] == "inference"}
    assert {served[f"after-{i}"] for i in range(4)} == {"tiny-v2"}
    assert {v for k, v in served.items() if not k.startswith("after-")} == {"tiny-v1"}
    assert_strict_json(fn)
    assert not [r for r in recs if r["event"] == "request_failed"]


@pytest.mark.parametrize(("case", "workers"), [("missing", 1), ("corrupt", 2)])
def test_init_context_failure_writes_one_init_failed_record_per_worker(case, workers, nuclio, tmp_path):
    model = tmp_path / "rope.pt"
    if case == "corrupt":  # torch's error is a paragraph; two workers print tracebacks at once
        model.write_bytes(b"not a checkpoint" * 10)
    fn = nuclio({"MODEL_PATH": model, "NUM_WORKERS": workers}, workers=workers)
    assert fn.wait_exit(120) == 2  # the processor panics when a wrapper exits 1 during init_context
    failed = [r for r in records(fn) if r["event"] == "init_failed"]
    assert len(failed) >= 1 and {r["error"] for r in failed} == {"bad_checkpoint"}
    expected = "no such file" if case == "missing" else "not a readable torch checkpoint"
    for rec in failed:
        assert rec["message"].startswith(f"checkpoint {model}: {expected}") and rec["level"] == "error"
        assert rec["logger"] == "ropewatch.function" and rec["worker_id"] in {"0", "1"}
    assert "Exception raised while running init_context" in fn.log()  # what Nuclio itself says


def test_unset_model_path_is_named(nuclio):
    fn = nuclio({"NUM_WORKERS": 1}, workers=1)
    assert fn.wait_exit(120) == 2
    (rec,) = [r for r in records(fn) if r["event"] == "init_failed"]
    assert (rec["error"], rec["message"]) == ("bad_config", "MODEL_PATH is not set")


def test_torch_threads_default_is_cores_over_workers(nuclio, tiny_checkpoint):
    from ropewatch_validator.cli.demo import load_function_module
    from support.nuclio import FUNCTION_DIR

    main = load_function_module(FUNCTION_DIR / "main.py")
    fn = nuclio({"MODEL_PATH": tiny_checkpoint, "NUM_WORKERS": 2}, workers=2).wait_ready()
    assert fn.stop() == 0
    loaded = [r for r in records(fn) if r["event"] == "model_loaded"]
    assert len(loaded) == 2 and {r["torch_threads"] for r in loaded} == {max(1, main.usable_cpus() // 2)}
    assert main.torch_threads({"NUM_WORKERS": "2"}, 16) == 8  # 16 cores shared by 2 worker processes
    assert main.torch_threads({"NUM_WORKERS": "4"}, 2) == 1  # never below one thread
    assert main.torch_threads({"NUM_WORKERS": "2", "TORCH_THREADS": "3"}, 16) == 3  # an explicit setting wins
    assert main.torch_threads({}, 6) == 6  # no NUM_WORKERS: one worker, torch's own default
    assert (main.cpu_quota("150000 100000\n"), main.cpu_quota("max 100000"), main.cpu_quota("")) == (
        2,
        None,
        None,
    )


def test_sigterm_lets_the_request_in_flight_finish_and_log(nuclio, tiny_config, tmp_path):
    """On SIGTERM the processor sends SIGUSR1 to the wrappers and waits up to 10 s for them; a request
    already in a worker completes, its record is written, then the termination callback runs."""
    from dataclasses import replace

    from ropewatch_core.model.checkpoint import demo_checkpoint

    slow = tmp_path / "slow.pt"  # two blocks at 1280x720: about a second per request on 2 cores
    save_checkpoint(
        demo_checkpoint(replace(tiny_config, img_size=(1280, 720), backbone_kwargs={"depth": 2})), slow
    )
    env = {"MODEL_PATH": slow, "NUM_WORKERS": 1, "TORCH_THREADS": 1}
    fn = nuclio(env, workers=1, extra_args=("--termination-timeout", "10")).wait_ready()  # Nuclio's default
    body = {"image": png_b64(64, 48), "boxes": [[1, 2, 30, 40]]}
    started = time.monotonic()
    assert fn.post(body).status_code == 200
    took = time.monotonic() - started
    with ThreadPoolExecutor(1) as pool:
        inflight = pool.submit(fn.post, body, None, "in-flight")
        time.sleep(min(0.3, took / 3))
        fn.proc.send_signal(15)
        answer = inflight.result(60)
    assert fn.wait_exit(60) == 0
    assert answer.status_code == 200 and answer.headers["X-Request-Id"] == "in-flight"
    recs = records(fn)
    order = [
        r["event"] for r in recs if r.get("request_id") == "in-flight" or r["event"] == "worker_terminating"
    ]
    assert order == ["inference", "worker_terminating"]


def test_bad_requests_are_400_with_short_messages_and_the_workers_keep_serving(
    nuclio, tiny_checkpoint, person_detector_weights
):
    """Issue 11, items 12-14, through the wrapper: each was a 500, an address, or a 5 MB echo before."""
    env = {
        "MODEL_PATH": tiny_checkpoint,
        "DETECTOR_PATH": person_detector_weights,
        "DETECTOR_ARCH": "fasterrcnn_mobilenet_v3_large_320_fpn",
        "NUM_WORKERS": 2,
    }
    fn = nuclio(env, workers=2).wait_ready()
    image = png_b64(64, 48)
    huge = "9" * 400
    cases = [  # (body, status, error, text in the message)
        ("[" * 100_000 + "]" * 100_000, 400, "body_not_json", "nested too deeply"),
        ('{"a":' * 50_000 + "1" + "}" * 50_000, 400, "body_not_json", "nested too deeply"),
        (f'{{"image": "{image}", "threshold": {huge}}}', 400, "bad_threshold", "999...999"),
        (f'{{"image": "{image}", "boxes": [[0, 0, {huge}, 10]]}}', 400, "bad_boxes", "999...999"),
        (
            {"image": png_b64(4000, 1)},
            400,
            "image_invalid",
            "4000x1 frame is too thin for the person detector",
        ),
        ({"image": png_b64(1, 4000)}, 400, "image_invalid", "1x4000 frame is too thin"),
        (
            {"image": "R0lGODlhZ2FyYmFnZQ=="},
            400,
            "image_invalid",
            "not a decodable image: unknown image format",
        ),
        ({"image": image, "threshold": "x" * 5_000_000}, 400, "bad_threshold", "'xxxxxxxx"),
        ({"image": image, "boxes": [["y" * 5_000_000, 0, 1, 1]]}, 400, "bad_boxes", "got ['yyyyyy"),
        ({"image": image, "boxes": [[100, 100, 200, 200]]}, 400, "bad_boxes", "inside the 64x48 frame"),
        ({"image": image, "boxes": [[1, 1, 1.001, 1.001]]}, 400, "bad_boxes", "less than 1 pixel"),
    ]
    for body, status, error, text in cases:
        answer = fn.post(body)
        reply = answer.json()
        assert (answer.status_code, reply["error"]) == (status, error), (error, reply)
        assert text in reply["message"] and " at 0x" not in reply["message"] and len(answer.content) < 600
    clipped = fn.post({"image": image, "boxes": [[-50, -50, 500, 500], [60, 40, 70, 50]]}, request_id="clip")
    assert clipped.status_code == 200  # boxes partly outside are clipped to the frame, as logged
    assert [item["points"] for item in clipped.json()] == [[0.0, 0.0, 64.0, 48.0], [60.0, 40.0, 64.0, 48.0]]
    assert fn.stop() == 0
    recs = records(fn)
    failed = [r for r in recs if r["event"] == "request_failed"]
    assert [r["error"] for r in failed] == [error for _, _, error, _ in cases]
    assert max(len(line) for line in fn.log_lines()) < PIPE_BUF  # no 5 MB echo in the log
    (logged,) = [r for r in recs if r.get("request_id") == "clip"]
    assert [d["box"] for d in logged["detections"]] == [[0.0, 0.0, 64.0, 48.0], [60.0, 40.0, 64.0, 48.0]]
