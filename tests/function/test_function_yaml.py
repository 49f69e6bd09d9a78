"""function.yaml / function-gpu.yaml against the issue's rules for CVAT's serverless layout."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from ropewatch_core.spec import cvat_spec
from ropewatch_validator.cli.demo import load_function_module
from support.paths import REPO

FUNCTION_DIR = REPO / "functions" / "safety_rope"


def load(name: str) -> dict:
    return yaml.safe_load((FUNCTION_DIR / name).read_text())


def seconds(timeout: str) -> int:
    match = re.fullmatch(r"(\d+)([smh])", timeout)
    assert match, timeout
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


@pytest.mark.parametrize("name", ["function.yaml", "function-gpu.yaml"])
def test_common_layout(name):
    doc = load(name)
    meta, spec = doc["metadata"], doc["spec"]
    assert meta["name"].startswith("safety-rope") and meta["namespace"] == "cvat"
    assert meta["annotations"]["name"] and meta["annotations"]["type"] == "detector"
    labels = json.loads(meta["annotations"]["spec"])
    assert labels == cvat_spec()
    for label in labels:
        assert label["name"] == "person" and label["type"] == "rectangle"
        for attribute in label["attributes"]:
            assert {"name", "input_type", "values"} <= set(attribute) and attribute["values"]
    assert spec["runtime"] == "python:3.10" and spec["handler"] == "main:handler"
    module_name, func = spec["handler"].split(":")
    module = load_function_module(FUNCTION_DIR / f"{module_name}.py")
    assert callable(getattr(module, func)) and callable(module.init_context)
    run = " ".join(d["value"] for d in spec["build"]["directives"]["postCopy"] if d["kind"] == "RUN")
    assert (
        "pip install" in run
        and "-c /opt/nuclio/constraints.txt" in run
        and "ropewatch_core-0.2.0-py3-none-any.whl[model]" in run
    )
    assert spec["build"]["baseImage"]
    (trigger,) = spec["triggers"].values()
    assert trigger["kind"] == "http" and trigger["numWorkers"] >= 1
    assert trigger["workerAvailabilityTimeoutMilliseconds"] > 0
    assert trigger["attributes"]["maxRequestBodySize"] == 32 * 1024 * 1024
    platform = spec["platform"]["attributes"]
    assert platform["restartPolicy"]["name"] == "always" and platform["mountMode"] == "volume"
    env = {e["name"]: e["value"] for e in spec["env"]}
    assert env["MODEL_PATH"].startswith("/opt/nuclio/models/")
    assert int(env["NUM_WORKERS"]) == trigger["numWorkers"]  # TORCH_THREADS default = cores / workers


def test_cpu_and_gpu_differences():
    cpu, gpu = load("function.yaml")["spec"], load("function-gpu.yaml")["spec"]
    assert seconds(cpu["eventTimeout"]) >= 60  # DINOv3-S at 1280x720 takes seconds on a CPU
    assert "resources" not in cpu and {e["name"]: e["value"] for e in cpu["env"]}["DEVICE"] == "cpu"
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert next(iter(gpu["triggers"].values()))["numWorkers"] == 1
    assert {e["name"]: e["value"] for e in gpu["env"]}["DEVICE"] == "cuda"
