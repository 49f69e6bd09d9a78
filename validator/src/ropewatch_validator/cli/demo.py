"""`ropewatch demo`: the function and the validator end to end on an embedded default, no servers needed.

1. An untrained demo checkpoint and random-init detector weights are written to a temporary
   directory, a 1280x720 site-camera-like JPEG is drawn, and the real Nuclio handler answers a
   CVAT-style request through nuclio_sdk's Context/Event/Response; the response and log are printed.
2. The sandbox CVAT (a local HTTP server) serves eight generated jobs with auto, semi-auto and manual
   person boxes, and the real `validate-job` pulls them through cvat-sdk as two model versions,
   writes report.{json,md,html} and the history (``history.sqlite``, where the newer version trips
   an alert rule) into the same directory: what ``ropewatch serve`` then shows.
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
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

# The demo runs the function from the checkout (installed editable): parents[4] of cli/ is the repo.
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


def load_function_module(path: Path = FUNCTION_MAIN) -> ModuleType:
    """Import functions/safety_rope/main.py the way Nuclio does (a file, not a package)."""
    spec = importlib.util.spec_from_file_location("safety_rope_main", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load the function from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def call_handler(
    module: ModuleType, context: Any, body: bytes | dict, headers: dict | None = None
) -> tuple[dict, list[dict]]:
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

    return [rec for _, rec in RecordReader().read(text.splitlines()) if isinstance(rec, dict)]


def init_function(module: ModuleType, worker_id: str = "demo-0") -> tuple[Any, list[dict]]:
    import logging

    import nuclio_sdk

    context = nuclio_sdk.Context(logger=nuclio_sdk.Logger(logging.INFO, "demo"), worker_id=worker_id)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        module.init_context(context)
    return context, parse_records(out.getvalue())


@contextlib.contextmanager
def function_env(values: dict[str, str]) -> Iterator[None]:
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
    from ropewatch_validator.learn.demo import write_demo_filter, write_demo_models

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model_path, detector_path = write_demo_models(workdir)
    frame = sample_frame_jpeg()
    (workdir / "frame.jpg").write_bytes(frame)
    module = load_function_module()
    with function_env({"MODEL_PATH": str(model_path), "DETECTOR_PATH": str(detector_path), "DEVICE": "cpu"}):
        context, startup = init_function(module)
    body = json.dumps(
        {"image": base64.b64encode(frame).decode("ascii"), "threshold": 0.5, "boxes": DEMO_BOXES}
    )
    response, records = call_handler(module, context, body.encode(), {"X-Request-Id": "demo-request-1"})
    filter_path = workdir / "filter-demo.pt"
    write_demo_filter(filter_path, frame, DEMO_BOXES)
    env = {
        "MODEL_PATH": str(model_path),
        "DETECTOR_PATH": str(detector_path),
        "FILTER_PATH": str(filter_path),
    }
    with function_env({**env, "DEVICE": "cpu"}):
        cascade_context, _ = init_function(module, "demo-1")
    _, cascade_records = call_handler(
        module, cascade_context, body.encode(), {"X-Request-Id": "demo-request-2"}
    )
    return {
        "workdir": str(workdir),
        "model_path": str(model_path),
        "detector_path": str(detector_path),
        "frame_path": str(workdir / "frame.jpg"),
        "response": response,
        "startup_log": startup,
        "log": records,
        "filter_path": str(filter_path),
        "cascade_log": cascade_records,
    }


# The dashboard's demo history: two model versions validated on generated jobs; the newer one flips
# more wrong-rope persons to correct and trips the flips rule. Its alert goes to two webhooks: a local
# receiver (delivered) and a closed port (failed, left in the outbox).
DEMO_VERSIONS = (("rope-2026.10", (101, 102, 103, 104), 0.04), ("rope-2026.11", (105, 106, 107, 108), 0.3))
DEMO_RULES = """
[[rule]]
name = "flips-per-1000"
metric = "dangerous_flips_per_1000"
op = ">"
threshold = 60

[[webhook]]
name = "ops-chat"
url = "{sent}"
timeout_s = 2
retries = 0

[[webhook]]
name = "pager"
url = "{failed}"
timeout_s = 2
retries = 0
"""


@contextlib.contextmanager
def webhook_receiver() -> Iterator[tuple[str, str]]:
    """A local endpoint that answers 204 to every POST (the demo's delivered webhook), and a URL on a
    port nobody listens on (the failed one)."""
    import socket
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Sink(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with socket.socket() as probe:  # a free port, closed again: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", f"http://127.0.0.1:{closed}/hook"
    finally:
        server.shutdown()
        server.server_close()


def run_validator_demo(workdir: Path) -> int:
    """validate-job against the sandbox CVAT: eight generated 40-frame jobs, four per model version,
    into ``workdir/history.sqlite`` (made anew); returns 0 when exactly the second version alerted."""
    from ropewatch_validator.cli.main import main
    from ropewatch_validator.sandbox import server as sandbox
    from ropewatch_validator.sandbox import synthetic

    workdir = Path(workdir)
    db = workdir / "history.sqlite"
    db.unlink(missing_ok=True)  # the demo's own history: a rerun shows the same dashboard
    state = sandbox.CvatState()
    for _, jobs, p_flip in DEMO_VERSIONS:
        for i, job in enumerate(jobs):
            state.add(
                synthetic.generate(40, job_id=job, task_id=11 + i % 2, project_id=3, seed=job, p_flip=p_flip)
            )
    codes = []
    with webhook_receiver() as (sent, failed), sandbox.serve(state) as (url, _):
        rules = workdir / "rules.toml"
        rules.write_text(DEMO_RULES.format(sent=sent, failed=failed), encoding="utf-8")
        for i, (version, jobs, _) in enumerate(DEMO_VERSIONS):
            quiet = i < len(DEMO_VERSIONS) - 1  # the newer version's summaries are the ones to read
            print(
                f"# validate-job {' '.join(map(str, jobs))} --model-version {version} (sandbox CVAT at {url})"
                + ("; its summaries:" if not quiet else "")
            )
            argv = ["validate-job", *map(str, jobs), "--server-host", url, "--model-version", version]
            argv += ["--out", str(workdir / "reports"), "--db", str(db), "--rules", str(rules)]
            argv += ["--frame-cache", str(workdir / "frames"), *(["--quiet"] if quiet else [])]
            codes.append(main(argv))
            print(f"# validate-job exited {codes[-1]} ({EXIT_MEANING.get(codes[-1], 'unexpected')})")
    print(f"# {_fired(db)}; the reports' CVAT links point to this sandbox CVAT, which stopped with the demo")
    return 0 if codes == [0, 1] else 2


EXIT_MEANING = {0: "validated, no rule fired", 1: "validated, an alert rule fired", 2: "could not validate"}


def _fired(db: Path) -> str:
    """How many alerts the demo's runs fired and where they went, read back from the store."""
    from ropewatch_validator.ops.history import open_store

    store = open_store(str(db))
    try:
        rows = store.delivery_status()
    finally:
        store.close()
    alerts = {r["alert_key"] for r in rows}
    sent = sum(1 for r in rows if r["status"] == "sent")
    return (
        f"{len(alerts)} alert(s) fired: {sent} delivered, {len(rows) - sent} left in the outbox "
        "(the 'pager' webhook points at a closed port on purpose)"
    )


def run_review_demo(workdir: Path, job: int = 105) -> int:
    """The review step (issue 19) on a sandbox report: the CVAT issues ``ropewatch review`` would open,
    with ``--dry-run`` (the sandbox has no issues API; nothing is written anywhere)."""
    from ropewatch_validator.cli.main import main

    report = Path(workdir) / "reports" / f"job-{job}" / "report.json"
    print(f"# ropewatch review --report {report} --dry-run --max 5 (the CVAT issues it would open)")
    return main(
        [
            "review",
            "--report",
            str(report),
            "--dry-run",
            "--max",
            "5",
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
    print(f"# the cascade: the same request, FILTER_PATH={result['filter_path']} (untrained filter, band set")
    print("# so one person is decided by the filter and one by the expert; `ropewatch cascade tune` sets it)")
    for record in result["cascade_log"]:
        print(json.dumps(record))
        for i, d in enumerate(record.get("detections", [])):
            print(
                f"#   person {i}: {d['safety_rope_use']} decided by the {d['stage']} "
                f"(filter P {d['p_filter']})"
            )
    validated = run_validator_demo(args.workdir)
    validated = validated or run_review_demo(args.workdir)
    print(f"# open {Path(args.workdir) / 'reports' / 'job-101' / 'report.html'} for the HTML report")
    print("# the dashboard (two model versions; the newer one is worse, and every page says so):")
    print(f"ropewatch serve --db {Path(args.workdir) / 'history.sqlite'}")
    print("# then open http://127.0.0.1:8765/")
    return 0 if response["status_code"] == 200 and validated == 0 else 1
