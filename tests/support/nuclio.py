"""The safety-rope function under Nuclio 1.14.1's real Python wrapper, run by ../shared/nuclio/processor.py.

``NuclioFunction`` starts the processor stand-in with this project's interpreter on a free loopback port,
waits until ``/__internal/health`` answers (the port opens only after every worker ran init_context), and
collects the container log (stdout + stderr) through a **pipe**, as Docker's log driver does: writes to a
regular file are serialised by the kernel and would hide interleaving that a pipe shows.
``NuclioDashboard`` is the dashboard stand-in CVAT's lambda manager talks to, in front of processors.
"""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from support.webserver import free_port

REPO = Path(__file__).resolve().parents[2]
KIT = Path(os.environ.get("ROPEWATCH_NUCLIO_KIT", REPO.parent / "shared" / "nuclio"))
PROCESSOR = KIT / "processor.py"
FUNCTION_DIR = REPO / "functions" / "safety_rope"


def png_b64(width: int, height: int, seed: int = 0) -> str:
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


class PipedProcess:
    """A stand-in process of this project's interpreter whose stdout + stderr are collected through a pipe."""

    def __init__(self, args: list[str]) -> None:
        self._chunks: list[bytes] = []
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)
        self._pump = threading.Thread(target=self._read, daemon=True)
        self._pump.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(1 << 16):
            self._chunks.append(chunk)

    def _wait_http(self, url: str, timeout: float) -> None:
        """Poll ``url`` until it answers 200; raise with the log's tail if the process exits or never does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if requests.get(url, timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready after {timeout} s:\n{self.log()[-3000:]}")

    @property
    def name(self) -> str:
        return type(self).__name__

    def wait_exit(self, timeout: float = 60.0) -> int:
        rc = self.proc.wait(timeout)
        self._pump.join(10)
        return rc

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (the processor gives workers workerTerminationTimeout), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.wait_exit()

    def log(self) -> str:
        return b"".join(self._chunks).decode("utf-8", errors="replace")

    def log_lines(self) -> list[str]:
        return self.log().splitlines()


class NuclioFunction(PipedProcess):
    """One processor stand-in (``workers`` wrapper processes) serving the function until ``stop``."""

    def __init__(self, env: dict[str, str], workers: int = 2, extra_args: tuple[str, ...] = ()) -> None:
        """``extra_args`` go to processor.py; without ``--termination-timeout`` it is 2 s, not Nuclio's 10 s
        (the wrapper never exits by itself after SIGUSR1, so every stop would wait the whole timeout)."""
        if "--termination-timeout" not in extra_args:
            extra_args = (*extra_args, "--termination-timeout", "2")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [
            sys.executable,
            str(PROCESSOR),
            "--function-dir",
            str(FUNCTION_DIR),
            "--port",
            str(self.port),
            "--workers",
            str(workers),
            "--python",
            sys.executable,
            *extra_args,
        ]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        super().__init__(args)

    def wait_ready(self, timeout: float = 120.0) -> NuclioFunction:
        """Wait for ``/__internal/health`` (the port opens only after every worker ran init_context)."""
        self._wait_http(self.url + "/__internal/health", timeout)
        return self

    def post(
        self,
        body: dict | str | bytes,
        session: requests.Session | None = None,
        request_id: str | None = None,
        timeout: float = 120.0,
    ) -> requests.Response:
        data = body if isinstance(body, (str, bytes)) else json.dumps(body)
        headers = {"Content-Type": "application/json"}
        if request_id:
            headers["X-Request-Id"] = request_id
        return (session or requests).post(self.url, data=data, headers=headers, timeout=timeout)


class NuclioDashboard(PipedProcess):
    """The dashboard stand-in (../shared/nuclio/dashboard.py) CVAT's lambda manager calls, listing each
    ``function.yaml`` as deployed at its processor's URL."""

    def __init__(self, functions: dict[Path, str], port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = [sys.executable, str(KIT / "dashboard.py"), "--port", str(self.port)]
        for yaml, url in functions.items():
            args += ["--function", f"{yaml}={url}"]
        super().__init__(args)

    def wait_ready(self, timeout: float = 120.0) -> NuclioDashboard:
        self._wait_http(self.url + "/api/functions", timeout)
        return self
