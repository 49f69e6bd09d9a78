"""The full loop (issue 9): CVAT's own lambda manager -> the Nuclio dashboard stand-in -> the processor
stand-in -> Nuclio's real Python wrapper -> ``functions/safety_rope`` -> shapes in CVAT; a person edits some;
``validate-job --logs`` joins the function's container log back to every frame and reports the lifecycle.

The detector must find persons without downloadable weights: a real torchvision
``fasterrcnn_mobilenet_v3_large_320_fpn`` whose box classifier ignores its features (weights 0) and gives
every region the same logits (bias: person 4, background 0, the other COCO classes -20), so every region
the RPN proposes is a person with P = e^4 / (e^4 + 1 + 89 e^-20) = 0.982; box deltas are 0, so boxes are
the proposals, and the per-class NMS (IoU 0.5) leaves well-separated boxes (at most 100 a frame).
CVAT's lambda manager calls the dashboard at its NUCLIO setting (``start.sh --nuclio-url``, default
``http://127.0.0.1:8070``; ``ROPEWATCH_NUCLIO_DASHBOARD_PORT`` for a CVAT configured otherwise).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ropewatch_core.model.detector import build_architecture
from ropewatch_validator.trace.logs import LogData, read_logs
from support.cvat_rest import LABELS, jpeg
from support.nuclio import FUNCTION_DIR, NuclioDashboard, NuclioFunction

ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"


def person_weights(path: Path) -> Path:
    """Weights of the real architecture that call every proposed region a person (see the module doc)."""
    torch.manual_seed(0)
    model = build_architecture(ARCH)
    predictor = model.roi_heads.box_predictor
    with torch.no_grad():
        predictor.cls_score.weight.zero_()
        predictor.cls_score.bias.fill_(-20.0)
        predictor.cls_score.bias[0], predictor.cls_score.bias[1] = 0.0, 4.0
        predictor.bbox_pred.weight.zero_()
        predictor.bbox_pred.bias.zero_()
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture
def function_behind_dashboard(tmp_path, nuclio):
    """The function under the processor stand-in (1 worker) and the dashboard stand-in CVAT calls
    (both from the one harness, ``support.nuclio``); yields the processor, whose log is the container's."""
    model = tmp_path / "rope.pt"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ropewatch_validator",
            "checkpoint",
            "demo",
            str(model),
            "--img-size",
            "64",
            "48",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {
        "MODEL_PATH": model,
        "DETECTOR_PATH": person_weights(tmp_path / "person.pth"),
        "DETECTOR_ARCH": ARCH,
        "TORCH_THREADS": 1,
    }
    fn = nuclio(env, workers=1, extra_args=("--handler", "main:handler", "--event-timeout", "120"))
    fn.wait_ready(180)
    dash_port = int(os.environ.get("ROPEWATCH_NUCLIO_DASHBOARD_PORT", "8070"))
    dashboard = NuclioDashboard({FUNCTION_DIR / "function.yaml": fn.url}, port=dash_port)
    try:
        dashboard.wait_ready(180)
        yield fn
    finally:
        dashboard.stop()


def container_log(fn: NuclioFunction, path: Path, requests_expected: int, timeout: float = 30.0) -> LogData:
    """The processor's log written to ``path`` (what ``--logs`` reads), once it holds the expected inference
    records: the pipe is read by a thread, so the last lines may land a moment after CVAT's answer."""
    deadline = time.monotonic() + timeout
    while True:
        path.write_text(fn.log(), encoding="utf-8")
        logs = read_logs([path])  # the project's reader of the container log
        if len(logs.requests) >= requests_expected or time.monotonic() > deadline:
            return logs
        time.sleep(0.2)


def test_lambda_manager_loop_joins_every_frame(real_cvat, validate, function_behind_dashboard, tmp_path):
    rest = real_cvat.rest
    files = {f"lm{i:02d}.jpg": jpeg(320, 240, 400 + i) for i in range(3)}
    task = rest.create_task(real_cvat.name("lambda"), LABELS, files)
    job = rest.jobs(task["id"])[0]["id"]
    assert "safety-rope" in {f["id"] for f in rest.get("/api/lambda/functions")}
    request = rest.request(
        "POST",
        "/api/lambda/requests",
        json={"function": "safety-rope", "task": task["id"], "cleanup": True, "threshold": 0.5},
    )
    deadline = time.monotonic() + 600
    while (status := rest.get(f"/api/lambda/requests/{request['id']}"))["status"] not in (
        "finished",
        "failed",
    ):
        assert time.monotonic() < deadline, status
        time.sleep(1)
    assert status["status"] == "finished", status
    shapes = rest.get(f"/api/jobs/{job}/annotations")["shapes"]
    log_file = tmp_path / "container.log"
    logs = container_log(function_behind_dashboard, log_file, requests_expected=3)
    logged, detections = len(logs.requests), len(logs.detections)
    # CVAT sent each of the 3 frames once and stored every returned person as an auto shape with the attribute
    assert logged == 3 and len(shapes) == detections > 0
    assert {s["source"] for s in shapes} == {"auto"} and all(s["attributes"] for s in shapes)

    # a person's edits: flip one value, move one box (CVAT's UI makes it semi-auto), delete one, draw one
    flip, move, gone = shapes[0], shapes[1], shapes[2]
    spec = flip["attributes"][0]["spec_id"]
    flip["attributes"] = [
        {"spec_id": spec, "value": "correct" if flip["attributes"][0]["value"] == "wrong" else "wrong"}
    ]
    move["points"] = [
        move["points"][0] + 2,
        move["points"][1] + 2,
        move["points"][2] + 2,
        move["points"][3] + 2,
    ]
    move["source"] = "semi-auto"
    rest.request(
        "PATCH",
        f"/api/jobs/{job}/annotations?action=update",
        json={"version": 0, "tags": [], "tracks": [], "shapes": [flip, move]},
    )
    rest.request(
        "PATCH",
        f"/api/jobs/{job}/annotations?action=delete",
        json={"version": 0, "tags": [], "tracks": [], "shapes": [gone]},
    )
    added = {**shapes[3], "source": "manual", "points": [1.0, 1.0, 9.0, 19.0]}
    added.pop("id")
    rest.request(
        "PATCH",
        f"/api/jobs/{job}/annotations?action=create",
        json={"version": 0, "tags": [], "tracks": [], "shapes": [added]},
    )

    code, rep = validate(job, "--logs", str(log_file), "--frame-cache", str(tmp_path / "cache"))
    assert code == 0
    frames = rep["trace"]["frames"]
    assert (frames["joined"], frames["unjoined_frames"]) == (3, [])  # 100 % of frames, by sha256
    counts = rep["trace"]["lifecycle"]["counts"]
    assert counts == {
        "accepted": detections - 3,
        "attribute_corrected": 1,
        "geometry_edited": 1,
        "deleted": 1,
        "added": 1,
        "unjoined_auto": 0,
        "unjoined_semi_auto": 0,
        "attribute_unmapped": 0,
    }
