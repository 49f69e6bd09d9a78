"""`ropewatch demo`'s function part: real architecture, real handler, one CVAT response + log record."""
from __future__ import annotations

import json

from validator.cmd_demo import DEMO_BOXES, run_function_demo


def test_run_function_demo(tmp_path):
    result = run_function_demo(tmp_path)
    response = result["response"]
    assert response["status_code"] == 200 and response["headers"]["X-Request-Id"] == "demo-request-1"
    items = json.loads(response["body"])
    assert [i["points"] for i in items] == DEMO_BOXES
    (record,) = result["log"]
    assert record["image"]["width"] == 1280 and record["image"]["height"] == 720
    assert record["model_version"] == "demo-untrained" and result["startup_log"][0]["untrained"] is True
