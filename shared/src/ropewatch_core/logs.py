"""structlog JSON lines on stdout: the function's one record per request (see README, *The Nuclio function*).

Loggers are built per call rather than configured globally, so the validator's own logging is left
alone and the stream is whatever ``sys.stdout`` is at the time (Nuclio's log collector, a test's capture).
"""

from __future__ import annotations

import sys
from typing import TextIO, cast

import structlog

from ropewatch_core.spec import FUNCTION_NAME

_PROCESSORS: list[structlog.typing.Processor] = [
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
    structlog.processors.JSONRenderer(sort_keys=False),
]


class _CurrentStdout:
    """Resolves ``sys.stdout`` at each write: the logger is made once in init_context, but the stream
    it must reach can be swapped later (a test's or the demo's capture of one request)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def function_logger(worker_id: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.wrap_logger(
        structlog.PrintLogger(cast(TextIO, _CurrentStdout())),
        processors=_PROCESSORS,
        wrapper_class=structlog.make_filtering_bound_logger(20),
    ).bind(logger="ropewatch.function", function=FUNCTION_NAME, worker_id=worker_id)
