"""The cvat-sdk auto-annotation module against the real server (issue 18.17-18).

CVAT 2.23.1's ``/api/server/about`` has no ``logo_url``/``subtitle``; cvat-cli >= 2.30 checks the server
version through a model that requires them, so no cvat-cli release with attribute-carrying shapes runs
``task auto-annotate`` against it. cvat-sdk's own driver (``auto_annotation.annotate_task``, what that
command calls after the check) does, and the module runs it (``python auto_annotate.py``). Its records
name their frames by pixels, and ``validate-job --logs`` joins them without ``--pixel-fingerprint``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ropewatch_core.records import RecordReader
from support.cvat_rest import LABELS, jpeg

REPO = Path(__file__).resolve().parents[2]
MODULE = REPO / "functions" / "safety_rope" / "auto_annotate.py"
CVAT_CLI = Path(sys.executable).with_name("cvat-cli")
ARCH = "fasterrcnn_mobilenet_v3_large_320_fpn"  # with tests/conftest.py's person_detector_weights


def _version(text: str) -> tuple[int, int]:
    major, minor = text.split(".")[:2]
    return int(major), int(minor)


@pytest.fixture(scope="module")
def models(tiny_checkpoint, person_detector_weights) -> dict[str, str]:
    return {"model_path": str(tiny_checkpoint), "detector_path": str(person_detector_weights)}


def _params(models: dict[str, str], log: Path) -> list[str]:
    values = {**models, "detector_arch": ARCH, "log_path": str(log)}
    return [arg for name, value in values.items() for arg in ("-p", f"{name}=str:{value}")]


def _task(real_cvat, frames: int) -> dict:
    files = {f"site_{i:02d}.jpg": jpeg(320, 240, seed=40 + i) for i in range(frames)}
    return real_cvat.rest.create_task(real_cvat.name("cli"), LABELS, files)


def test_cvat_cli_against_this_server(real_cvat, models, tmp_path):
    """The compatibility matrix's row for this server: cvat-cli 2.80 refuses a server older than 2.30 at its
    version check, before any frame is read or any shape written; a newer server runs it."""
    task = _task(real_cvat, 1)
    host, _, port = real_cvat.url.rpartition(":")
    done = subprocess.run(
        [str(CVAT_CLI), "--server-host", host, "--server-port", port, "--auth", real_cvat.user]
        + ["task", "auto-annotate", str(task["id"]), "--function-file", str(MODULE)]
        + _params(models, tmp_path / "cli.log"),
        env={**os.environ, "PASS": real_cvat.password},
        capture_output=True,
        text=True,
        timeout=600,
    )
    shapes = real_cvat.rest.get(f"/api/tasks/{task['id']}/annotations")["shapes"]
    if _version(real_cvat.version) < (2, 30):
        assert done.returncode != 0 and "logo_url" in done.stderr and shapes == []
    else:
        assert done.returncode == 0, done.stderr[-2000:]
        assert shapes


def test_the_module_annotates_through_the_sdk_driver_and_its_logs_join(real_cvat, validate, models, tmp_path):
    task = _task(real_cvat, 3)
    log = tmp_path / "cli.log"
    done = subprocess.run(
        [sys.executable, str(MODULE), str(task["id"]), "--server-host", real_cvat.url]
        + ["--auth", real_cvat.user, *_params(models, log)],
        env={**os.environ, "PASS": real_cvat.password},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    records = [rec for _, rec in RecordReader().read(log.read_text().splitlines())]  # parts joined
    assert len(records) == 3 and all(r["image"]["source_bytes"] is False for r in records)

    (job,) = real_cvat.rest.jobs(task["id"])
    shapes = real_cvat.rest.get(f"/api/jobs/{job['id']}/annotations")["shapes"]
    assert len(shapes) == sum(len(r["detections"]) for r in records) > 0
    labels = {lb["id"]: lb for lb in real_cvat.rest.get(f"/api/labels?task_id={task['id']}")["results"]}
    for shape in shapes:
        label = labels[shape["label_id"]]
        (value,) = shape["attributes"]
        assert label["name"] == "person" and shape["source"] == "auto" and shape["type"] == "rectangle"
        assert value["spec_id"] == label["attributes"][0]["id"] and value["value"] in ("wrong", "correct")

    code, report = validate(job["id"], "--logs", str(log), "--format", "json")
    assert code == 0 and report is not None
    frames = report["trace"]["frames"]
    assert frames["joined"] == frames["by_pixel_sha256"] == 3 and frames["pixel_fingerprint"] is True
    assert report["trace"]["lifecycle"]["counts"]["accepted"] == len(shapes)


def test_the_runner_says_one_line_when_the_task_does_not_exist(real_cvat, models, tmp_path):
    done = subprocess.run(
        [sys.executable, str(MODULE), "999999", "--server-host", real_cvat.url, "--auth", real_cvat.user]
        + _params(models, tmp_path / "x.log"),
        env={**os.environ, "PASS": real_cvat.password},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("auto_annotate: task 999999: ") and real_cvat.password not in line
