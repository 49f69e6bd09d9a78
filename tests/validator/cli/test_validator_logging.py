"""The validator's logs: JSON lines on stderr when it is not a terminal, console lines on a terminal,
stdout only for results."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys

import pytest
import structlog

from ropewatch_validator.cli.logconfig import configure_logging
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def restore_logging():
    """configure_logging changes process-wide state: put structlog and the root logger back."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers, root.level = saved[0], saved[1]


def test_cron_run_logs_json_lines_on_stderr_and_results_on_stdout(tmp_path):
    state = sandbox.CvatState()
    state.add(synthetic.generate(20, job_id=101, seed=1))
    rules = tmp_path / "rules.toml"
    token_path = f"/services/T0/B0/t0ken-{closed_port()}"
    rules.write_text(
        '[[rule]]\nname = "wrong-f1"\nmetric = "attribute.per_class.wrong.f1"\nop = "<"\nthreshold = 0.999\n'
        f'[[webhook]]\nname = "ops"\nurl = "http://127.0.0.1:{closed_port()}{token_path}"\n'
        "retries = 1\nbackoff_s = 0.01\n"  # one retry: urllib3 logs it, with the path
    )
    env = {**os.environ, "ROPEWATCH_LOCK_DIR": str(tmp_path / "locks")}
    env.pop("CVAT_ACCESS_TOKEN", None)
    with sandbox.serve(state) as (url, _):
        proc = subprocess.run(
            [sys.executable, "-m", "ropewatch_validator", "validate-job", "101", "--server-host", url,
             "--out", str(tmp_path / "out"), "--db", str(tmp_path / "h.sqlite"), "--rules", str(rules),
             "--format", "json"],
            capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the rule fired
    events = []
    for line in proc.stderr.splitlines():
        if line.startswith("validate-job: "):  # the CLI's one-line summary per job, for people
            continue
        record = json.loads(line)  # every other stderr line is one JSON object
        assert {"timestamp", "level", "logger", "event"} <= set(record)
        events.append(record)
    by_event = {r["event"]: r for r in events}
    assert by_event["job_done"]["logger"] == "ropewatch.schedule"
    assert (by_event["job_done"]["job"], by_event["job_done"]["alerts"]) == (101, ["wrong-f1"])
    undelivered = by_event["alert_undelivered"]
    assert (undelivered["level"], undelivered["target"], undelivered["logger"]) == (
        "warning",
        "ops",
        "ropewatch.alert",
    )
    assert by_event["batch_done"]["exit_code"] == 1
    assert "t0ken" not in proc.stderr + proc.stdout  # the webhook URL holds a token: never logged
    # stdout carries the results only: the summary and the report paths, no log event.
    assert "person detection" in proc.stdout and "reports: " in proc.stdout
    for line in proc.stdout.splitlines():
        assert '"event"' not in line


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_gets_console_lines_and_library_records_share_the_format(monkeypatch, restore_logging):
    pipe = io.StringIO()
    monkeypatch.setattr(sys, "stderr", pipe)
    configure_logging()
    structlog.get_logger("ropewatch.alert").info("alert_delivered", target="ops")
    logging.getLogger("cvat_sdk").warning("server is old")  # a library's stdlib record, same renderer
    logging.getLogger("urllib3").setLevel(logging.WARNING)  # as cvat-sdk's Configuration does
    logging.getLogger("urllib3.connectionpool").warning("Retrying ... /services/t0ken")  # dropped
    logging.getLogger("cvat_sdk").info("chatter")  # libraries log from warnings up
    first, second = (json.loads(line) for line in pipe.getvalue().splitlines())
    assert (first["event"], first["target"], first["level"], first["logger"]) == (
        "alert_delivered",
        "ops",
        "info",
        "ropewatch.alert",
    )
    assert (second["event"], second["level"], second["logger"]) == ("server is old", "warning", "cvat_sdk")

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    configure_logging()
    structlog.get_logger("ropewatch.schedule").info("job_done", job=7)
    [line] = terminal.getvalue().splitlines()
    assert not line.startswith("{") and "job_done" in line and "job" in line and "7" in line
