"""A stand-in CVAT server on loopback, for ``ropewatch demo``, the tests and the benchmarks.

It answers the read endpoints the validator uses with bodies shaped like CVAT 2.73's (the tests
check every body against CVAT's OpenAPI schema), from a seed of real dumps and generated jobs, and
derives them as CVAT 2.23 does (``sandbox.cvat_model``: meta of video, step, GT and honeypot jobs,
attribute defaults filled on read), checked against a real server in ``tests/realcvat``.
Faults can be injected (status codes, delays) to exercise retries, and every request is logged.
Stdlib only, so the demo runs without test dependencies.
"""

from __future__ import annotations

import base64
import io
import json
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from ropewatch_validator.sandbox.cvat_model import read_annotations
from ropewatch_validator.sandbox.synthetic import SyntheticJob, meta_body

ABOUT = {
    "name": "Computer Vision Annotation Tool",
    "description": "ropewatch sandbox",
    "version": "2.73.0",
    "logo_url": "",
    "subtitle": "sandbox",
}
USER = {
    "id": 1,
    "username": "sandbox",
    "first_name": "",
    "last_name": "",
    "email": "",
    "groups": ["admin"],
    "is_staff": True,
    "is_superuser": True,
    "is_active": True,
    "url": "http://localhost/api/users/1",
    "last_login": None,
    "date_joined": "2026-01-01T00:00:00Z",
    "has_analytics_access": True,
}


@dataclass
class Fault:
    status: int
    count: int
    path_contains: str = ""
    delay_s: float = 0.0


@dataclass
class CvatState:
    """What the sandbox serves; mutate it between requests to change the server's answers."""

    jobs: dict[int, dict] = field(default_factory=dict)
    tasks: dict[int, dict] = field(default_factory=dict)
    labels: list[dict] = field(default_factory=list)
    annotations: dict[int, dict] = field(default_factory=dict)
    meta: dict[int, dict] = field(default_factory=dict)
    layouts: dict[int, dict] = field(default_factory=dict)  # job -> validation_layout (honeypots)
    fill_defaults: bool = True  # read annotations back as CVAT does (False: serve them exactly as stored)
    frames: dict[tuple[int, int], bytes] = field(default_factory=dict)
    token: str | None = None
    basic: tuple[str, str] | None = None
    faults: list[Fault] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def add(self, job: SyntheticJob) -> None:
        jid, tid = job.job["id"], job.task["id"]
        self.jobs[jid] = job.job
        self.tasks[tid] = job.task
        known = {label["id"] for label in self.labels}
        self.labels += [label for label in job.labels if label["id"] not in known]
        self.annotations[jid] = job.annotations
        self.meta[jid] = job.meta
        self.frames.update({(jid, n): data for n, data in job.frames_bytes.items()})

    def fail(self, status: int, count: int = 1, path_contains: str = "", delay_s: float = 0.0) -> None:
        """The next ``count`` matching requests answer ``status`` (after ``delay_s``; 0 = as usual)."""
        self.faults.append(Fault(status, count, path_contains, delay_s))


def seed_from_assets(state: CvatState, assets: Path) -> None:
    """Load a folder of CVAT's own API dumps (e.g. ``tests/data/cvat/assets``) into the sandbox."""

    def load(name: str) -> dict:
        return json.loads((assets / name).read_text(encoding="utf-8"))

    for job in load("jobs.json")["results"]:
        state.jobs[job["id"]] = job
        # the dumps hold no data/meta; serve every frame of the job's range (sparse GT jobs included)
        start = job.get("start_frame", 0)
        n = job.get("stop_frame", start) - start + 1
        state.meta.setdefault(job["id"], meta_body(n, 640, 480, start_frame=start))
    for task in load("tasks.json")["results"]:
        state.tasks[task["id"]] = task
    state.labels += load("labels.json")["results"]
    for jid, body in load("annotations.json")["job"].items():
        state.annotations[int(jid)] = body


def _page(items: list[dict], query: dict, url: str) -> dict:
    page = int(query.get("page", ["1"])[0])
    size = int(query.get("page_size", ["10"])[0])
    chunk = items[(page - 1) * size : page * size]
    more = page * size < len(items)
    base = url.split("?")[0]
    rest = "&".join(f"{k}={v[0]}" for k, v in query.items() if k not in ("page",))
    nxt = f"{base}?page={page + 1}" + (f"&{rest}" if rest else "") if more else None
    prev = f"{base}?page={page - 1}" + (f"&{rest}" if rest else "") if page > 1 else None
    return {"count": len(items), "next": nxt, "previous": prev, "results": chunk}


def _jpeg(width: int, height: int, seed: int) -> bytes:
    from PIL import Image

    img = Image.new(
        "RGB", (max(width // 8, 8), max(height // 8, 8)), ((seed * 37) % 256, (seed * 91) % 256, 90)
    )
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=80)
    return out.getvalue()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # otherwise every keep-alive response stalls ~40 ms

    def log_message(self, format: str, *args: Any) -> None:  # the state's request log replaces stderr chatter
        pass

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: object) -> None:
        self._send(status, json.dumps(payload).encode())

    def _authorized(self) -> bool:
        state = self.server.state
        if state.token is None and state.basic is None:
            return True
        header = self.headers.get("Authorization", "")
        if state.token is not None and header in (f"Bearer {state.token}", f"Token {state.token}"):
            return True
        if state.basic is not None and header.startswith("Basic "):
            return base64.b64decode(header[6:]).decode() == ":".join(state.basic)
        return False

    def do_GET(self) -> None:
        state = self.server.state
        state.requests.append(self.path)
        for fault in state.faults:
            if fault.count > 0 and fault.path_contains in self.path:
                fault.count -= 1
                time.sleep(fault.delay_s)
                if fault.status:
                    return self._json(fault.status, {"detail": f"injected {fault.status}"})
                break
        if not self._authorized():
            return self._json(401, {"detail": "Authentication credentials were not provided."})
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        parts = [p for p in url.path.split("/") if p][1:]  # drop "api"
        try:
            self._route(parts, query)
        except KeyError as exc:
            self._json(404, {"detail": f"Not found: {exc}"})

    def _route(self, parts: list[str], query: dict) -> None:
        state, url = self.server.state, self.server.url + self.path
        match parts:
            case ["server", "about"]:
                self._json(200, ABOUT)
            case ["users", "self"]:
                self._json(200, USER)
            case ["jobs"]:
                jobs = [
                    j
                    for j in state.jobs.values()
                    if "task_id" not in query or str(j.get("task_id")) == query["task_id"][0]
                ]
                if "project_id" in query:
                    jobs = [j for j in jobs if str(j.get("project_id")) == query["project_id"][0]]
                if "type" in query:
                    jobs = [j for j in jobs if j.get("type") == query["type"][0]]
                self._json(200, _page(sorted(jobs, key=lambda j: j["id"]), query, url))
            case ["jobs", jid]:
                self._json(200, state.jobs[int(jid)])
            case ["jobs", jid, "annotations"]:
                task = state.jobs[int(jid)]["task_id"]
                labels = [lb for lb in state.labels if lb.get("task_id") in (task, None)]
                body = state.annotations[int(jid)]
                self._json(200, read_annotations(body, labels) if state.fill_defaults else body)
            case ["jobs", jid, "validation_layout"]:
                empty = {"honeypot_count": 0, "honeypot_frames": [], "honeypot_real_frames": []}
                self._json(200, state.layouts.get(int(jid), empty))
            case ["jobs", jid, "data", "meta"]:
                self._json(200, state.meta[int(jid)])
            case ["jobs", jid, "data"]:
                number = int(query["number"][0])
                data = state.frames.get((int(jid), number))
                if data is None:
                    first = state.meta[int(jid)]["frames"][0]
                    data = _jpeg(first.get("width", 64), first.get("height", 48), number)
                self._send(200, data, "image/jpeg")
            case ["tasks", tid]:
                self._json(200, state.tasks[int(tid)])
            case ["labels"]:
                labels = state.labels
                if "job_id" in query:
                    task = state.jobs[int(query["job_id"][0])]["task_id"]
                    labels = [lb for lb in labels if lb.get("task_id") in (task, None)]
                elif "task_id" in query:
                    labels = [lb for lb in labels if lb.get("task_id") in (int(query["task_id"][0]), None)]
                self._json(200, _page(labels, query, url))
            case _:
                self._json(404, {"detail": "Not found."})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: CvatState
    url: str

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (its deadline shut the socket) is not the server's error: no traceback
        on stderr, which the tests read as validate-job's own output."""
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


@contextmanager
def serve(state: CvatState | None = None) -> Iterator[tuple[str, CvatState]]:
    """Run the sandbox on 127.0.0.1 (a free port) for the duration of the block; yields (url, state)."""
    server = _Server(("127.0.0.1", 0), _Handler)
    server.state = state or CvatState()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="cvat-sandbox", daemon=True)
    thread.start()
    try:
        yield server.url, server.state
    finally:
        server.shutdown()
        server.server_close()
