"""One error family for ropewatch: every expected failure is a ``RopewatchError``.

Each subclass carries the process exit code the CLI returns for it and a one-line message that is safe
to show (no traceback, no secret, no megabytes of echoed input). The CLI maps the whole family in one
place (``ropewatch_validator.cli.main``); the Nuclio handler maps it to HTTP 400 / 500.

Exit codes (the contract cron, CI and the promotion gate read):

* 0: done (a gate: promote);
* 1: done, and the answer is "no" (an alert fired, a gate rejected, a band failed its targets);
* 2: could not do it (bad input, unreachable server, unreadable file); nothing was written.
"""

from __future__ import annotations

from typing import ClassVar

EXIT_OK = 0
EXIT_NO = 1
EXIT_ERROR = 2


class RopewatchError(Exception):
    """Base of every expected ropewatch failure; ``str(err)`` is the one line shown to a person."""

    exit_code: ClassVar[int] = EXIT_ERROR

    def __str__(self) -> str:
        return " ".join(super().__str__().split())


class InputError(RopewatchError, ValueError):
    """The input (a file, an argument, a request body) is not what the contract says."""


class ServiceError(RopewatchError, RuntimeError):
    """A service ropewatch talks to (CVAT, a webhook receiver, the store) failed or lied."""


class Rejected(RopewatchError):
    """The work ran, and its verdict is no: a gate rejected a candidate, a tuned band misses its targets."""

    exit_code: ClassVar[int] = EXIT_NO
