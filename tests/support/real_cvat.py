"""The real-CVAT tier: a CVAT server for the whole test session (the ``real_cvat`` fixture of
tests/conftest.py), and the tier's connection for the benchmarks that run against it.

The server is any CVAT given by ``CVAT_URL`` / ``CVAT_USER`` / ``CVAT_PASSWORD`` (a docker-compose CVAT
works), else CVAT 2.23.1 from ``../shared/cvat-server/start.sh`` with its state (venv, database) in
``${ROPEWATCH_CVAT_STATE:-/var/tmp/ropewatch-cvat-state}``, outside the clone, on
``${ROPEWATCH_CVAT_PORT:-18080}``. The first start installs CVAT's dependencies (about 2 minutes); later
starts reuse them (about 20 s), and a server that already answers is used as is. A server this session
started is stopped at its end (``stop.sh`` keeps the state) unless ``ROPEWATCH_CVAT_KEEP=1``. Every task a
test creates is deleted at the end of the session.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from support.cvat_rest import CvatRest
from support.kit import SHARED, exports

STATE = Path(os.environ.get("ROPEWATCH_CVAT_STATE", "/var/tmp/ropewatch-cvat-state"))
PORT = os.environ.get("ROPEWATCH_CVAT_PORT", "18080")


@dataclass
class RealCvat:
    url: str
    user: str
    password: str
    rest: CvatRest
    version: str
    run_id: str  # makes task names unique per session

    def name(self, what: str) -> str:
        return f"ropewatch-{self.run_id}-{what}"


def answers(url: str) -> bool:
    try:
        return requests.get(f"{url}/api/server/about", timeout=5).ok
    except requests.RequestException:
        return False


def tier_env() -> dict[str, str]:
    """What start.sh exported for the tier's state (``CVAT_URL``, ``CVAT_SERVER_LOGS``...), or {}."""
    path = STATE / "cvat.env"
    return exports(path.read_text()) if path.is_file() else {}


@contextmanager
def real_cvat_session() -> Iterator[RealCvat]:
    started = False
    if os.environ.get("CVAT_URL"):
        url, user, password = os.environ["CVAT_URL"], os.environ["CVAT_USER"], os.environ["CVAT_PASSWORD"]
    else:
        start = SHARED / "cvat-server" / "start.sh"
        assert start.is_file(), f"no CVAT: set CVAT_URL/CVAT_USER/CVAT_PASSWORD or provide {start}"
        known = tier_env()
        started = not (known.get("CVAT_URL") and answers(known["CVAT_URL"]))
        t0 = time.monotonic()
        done = subprocess.run(
            ["bash", str(start), str(STATE), "--port", PORT], capture_output=True, text=True, timeout=1800
        )
        assert done.returncode == 0, f"start.sh failed ({done.returncode}): {done.stderr[-2000:]}"
        env = exports(done.stdout)
        url, user, password = env["CVAT_URL"], env["CVAT_USER"], env["CVAT_PASSWORD"]
        print(f"\nreal CVAT at {url}: start.sh took {time.monotonic() - t0:.1f} s")
    rest = CvatRest(url, user, password)
    version = rest.get("/api/server/about")["version"]
    cvat = RealCvat(url, user, password, rest, version, uuid.uuid4().hex[:8])
    try:
        yield cvat
    finally:
        for task in rest.get(f"/api/tasks?search=ropewatch-{cvat.run_id}&page_size=500")["results"]:
            rest.request("DELETE", f"/api/tasks/{task['id']}")
        if started and os.environ.get("ROPEWATCH_CVAT_KEEP") != "1":
            subprocess.run(
                ["bash", str(SHARED / "cvat-server" / "stop.sh"), str(STATE)],
                capture_output=True,
                timeout=300,
            )
