"""Logging for the validator's commands: events go to stderr, stdout is kept for results.

On a terminal, events are coloured ``key=value`` lines for people; otherwise (cron, systemd,
Kubernetes, a pipe) one JSON object per line with ``timestamp``, ``level``, ``logger`` and
``event``, for log collectors. structlog events and the standard ``logging`` records of libraries
(cvat-sdk, urllib3) share one handler and one renderer, so stderr never mixes two formats.
"""

from __future__ import annotations

import logging
import sys

import structlog

_PRE_CHAIN: list[structlog.typing.Processor] = [
    structlog.stdlib.add_logger_name,
    structlog.stdlib.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at each record (a redirect, a test's capture)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # urllib3's retry warnings quote the request path, and Slack/Teams webhook paths carry tokens.
        # Filtered here, not by the logger's level: cvat-sdk resets urllib3's level to WARNING.
        return record.levelno >= logging.ERROR or not record.name.startswith("urllib3")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # logging.Handler's contract: emit never raises, handleError reports it
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on a non-TTY stderr, console lines on a TTY; called by the CLI's ``main``.

    ropewatch's own loggers log from ``level``; other libraries from warnings up (urllib3 from
    errors, see ``_StderrHandler.filter``).
    """
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer() if sys.stderr.isatty() else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_PRE_CHAIN,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_PRE_CHAIN,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers = [h for h in root.handlers if not isinstance(h, _StderrHandler)] + [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("ropewatch").setLevel(level)
