"""The Nuclio handler in process, through nuclio_sdk's test Platform, Event and Response (the wire dict),
and the request bodies CVAT sends it: shared by the function's tests and the checkpoint-import tests."""

from __future__ import annotations

import base64
import io
import json

import nuclio_sdk
import nuclio_sdk.test
import numpy as np
from PIL import Image

from ropewatch_validator.cli.demo import load_function_module, parse_records
from support.paths import REPO

FUNCTION_DIR = REPO / "functions" / "safety_rope"
MAIN = load_function_module(FUNCTION_DIR / "main.py")


def jpeg(width=160, height=120, seed=0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="JPEG")
    return out.getvalue()


def body_of(image: bytes, **extra) -> bytes:
    return json.dumps({"image": base64.b64encode(image).decode(), **extra}).encode()


class Function:
    """A deployed function: env, one nuclio_sdk test Platform (it runs init_context once), stdout capture."""

    def __init__(self, capsys):
        self.capsys, self.platform, self.startup = capsys, nuclio_sdk.test.Platform(), []

    def call(self, body, headers=None, as_dict=False) -> tuple[dict, list[dict]]:
        self.capsys.readouterr()
        event = nuclio_sdk.Event(
            body=json.loads(body) if as_dict else body,
            content_type="application/json",
            headers=headers or {},
            method="POST",
            trigger=nuclio_sdk.TriggerInfo("http", "myHttpTrigger"),
        )
        output = self.platform.call_handler(MAIN.handler, event)
        assert isinstance(output, nuclio_sdk.Response)  # never a bare list
        wire = nuclio_sdk.Response.from_entrypoint_output(json.dumps, output)
        records = parse_records(self.capsys.readouterr().out)
        self.startup += [r for r in records if r["event"] == "model_loaded"]  # init_context on the first call
        return wire, [r for r in records if r["event"] != "model_loaded"]
