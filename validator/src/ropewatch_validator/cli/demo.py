"""`ropewatch demo`: the function and the validator end to end on an embedded default, no servers needed.

1. An untrained demo checkpoint and random-init detector weights are written to a temporary
   directory, a 1280x720 site-camera-like JPEG is drawn, and the real Nuclio handler answers a
   CVAT-style request through nuclio_sdk's Context/Event/Response; the response and log are printed.
2. The sandbox CVAT (a local HTTP server) serves a generated job with auto, semi-auto and manual
   person boxes, and the real `validate-job` pulls it through cvat-sdk, writes report.{json,md,html}
   and a history row into the same directory, and prints its summary.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import io
import json
import os
import sys
from pathlib import Path

# The demo runs the function from the checkout (the README installs it editable): validator/src/ropewatch_validator/cli → repo.
FUNCTION_MAIN = Path(__file__).resolve().parents[4] / "functions" / "safety_rope" / "main.py"
DEMO_BOXES = [[300.0, 260.0, 420.0, 600.0], [820.0, 200.0, 930.0, 560.0]]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the Nuclio function (untrained model) and validate-job (sandbox CVAT) on embedded data",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("ropewatch-demo"),
        help="demo checkpoint, frame, reports and history go here (default: ./ropewatch-demo)",
    )
    parser.set_defaults(func=run)


def sample_frame_jpeg(width: int = 1280, height: int = 720) -> bytes:
    """A synthetic site frame: sky, a scaffold, two stick persons (the DEMO_BOXES), one with a rope."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (width, height), (150, 190, 230))
    draw = ImageDraw.Draw(im)
    draw.rectangle([0, int(height * 0.8), width, height], fill=(120, 110, 100))
    for x in range(100, width, 180):
        draw.rectangle([x, 150, x + 12, int(height * 0.8)], fill=(90, 90, 95))
    draw.rectangle([0, 600, width, 612], fill=(90, 90, 95))
    for x1, y1, x2, y2 in DEMO_BOXES:
        cx = (x1 + x2) / 2
        draw.ellipse([cx - 25, y1, cx + 25, y1 + 50], fill=(230, 190, 160))
        draw.rectangle([x1 + 20, y1 + 55, x2 - 20, y1 + 200], fill=(250, 140, 20))
        draw.rectangle([x1 + 25, y1 + 200, x2 - 25, y2], fill=(40, 50, 90))
    draw.line([(360, 320), (360, 150)], fill=(220, 30, 30), width=5)  # a rope to the anchor
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=90)
    return out.getvalue()


def load_function_module(path: Path = FUNCTION_MAIN):
    """Import functions/safety_rope/main.py the way Nuclio does (a file, not a package)."""
    spec = importlib.util.spec_from_file_location("safety_rope_main", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def call_handler(module, context, body: bytes | dict, headers: dict | None = None) -> tuple[dict, list[dict]]:
    """One request through the real handler; returns the wire response and the JSON log records."""
    import nuclio_sdk

    event = nuclio_sdk.Event(
        body=body,
        content_type="application/json",
        headers=headers or {},
        method="POST",
        path="/",
        trigger=nuclio_sdk.TriggerInfo("http", "myHttpTrigger"),
    )
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        output = module.handler(context, event)
    return nuclio_sdk.Response.from_entrypoint_output(json.dumps, output), parse_records(out.getvalue())


def parse_records(text: str) -> list[dict]:
    """The records in captured function output, ``record_part`` lines joined (the core's one reader)."""
    from ropewatch_core.records import RecordReader

    return [rec for _, rec in RecordReader().read(text.splitlines())]


def init_function(module, worker_id: str = "demo-0"):
    import logging

    import nuclio_sdk

    context = nuclio_sdk.Context(logger=nuclio_sdk.Logger(logging.INFO, "demo"), worker_id=worker_id)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        module.init_context(context)
    return context, parse_records(out.getvalue())


@contextlib.contextmanager
def function_env(values: dict[str, str]):
    """The deployment's env for init_context, restored afterwards so the caller's process is unchanged."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_function_demo(workdir: Path) -> dict:
    """Write demo model files to ``workdir``, answer one CVAT request; returns response + log records."""
    from ropewatch_core.model.checkpoint import demo_checkpoint, save_checkpoint
    from ropewatch_core.model.detector import write_demo_weights

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model_path, detector_path = workdir / "rope-demo.pt", workdir / "person-demo.pth"
    save_checkpoint(demo_checkpoint(), model_path)
    write_demo_weights(detector_path)
    frame = sample_frame_jpeg()
    (workdir / "frame.jpg").write_bytes(frame)
    module = load_function_module()
    with function_env({"MODEL_PATH": str(model_path), "DETECTOR_PATH": str(detector_path), "DEVICE": "cpu"}):
        context, startup = init_function(module)
    body = json.dumps(
        {"image": base64.b64encode(frame).decode("ascii"), "threshold": 0.5, "boxes": DEMO_BOXES}
    )
    response, records = call_handler(module, context, body.encode(), {"X-Request-Id": "demo-request-1"})
    return {
        "workdir": str(workdir),
        "model_path": str(model_path),
        "detector_path": str(detector_path),
        "frame_path": str(workdir / "frame.jpg"),
        "response": response,
        "startup_log": startup,
        "log": records,
    }


def run_validator_demo(workdir: Path) -> int:
    """validate-job against the sandbox CVAT serving a generated 60-frame job; returns its exit code."""
    from ropewatch_validator.cli.main import main
    from ropewatch_validator.sandbox import server as sandbox
    from ropewatch_validator.sandbox import synthetic

    state = sandbox.CvatState()
    state.add(synthetic.generate(60, seed=3))
    with sandbox.serve(state) as (url, _):
        print(
            f"# validate-job 101 against the sandbox CVAT at {url} (generated job: auto, semi-auto, manual boxes)"
        )
        return main(
            [
                "validate-job",
                "101",
                "--server-host",
                url,
                "--out",
                str(Path(workdir) / "reports"),
                "--db",
                str(Path(workdir) / "history.sqlite"),
            ]
        )


def run(args: argparse.Namespace) -> int:
    result = run_function_demo(args.workdir)
    response = result["response"]
    print("# init_context log:")
    for record in result["startup_log"]:
        print(json.dumps(record))
    print(f"# Nuclio function on {result['frame_path']} (untrained demo checkpoint: the values are random)")
    print(
        f"# HTTP {response['status_code']} {response['content_type']}, X-Request-Id "
        f"{response['headers'].get('X-Request-Id')}; CVAT response body:"
    )
    print(json.dumps(json.loads(response["body"]), indent=2))
    print("# log record:")
    for record in result["log"]:
        print(json.dumps(record))
    validated = run_validator_demo(args.workdir)
    print(f"# open {Path(args.workdir) / 'reports' / 'job-101' / 'report.html'} for the HTML report")
    return 0 if response["status_code"] == 200 and validated == 0 else 1
