"""One deadline for a whole HTTP request over urllib3, however slowly the other side trickles.

A socket timeout restarts with every byte, so only a clock outside the read can bound a server (CVAT)
or a webhook receiver that sends one byte a second. Requests run on their callers' threads inside
:func:`watching`; urllib3 pools built from :func:`watched_pools` tell the running request's
:class:`Watch` which socket each attempt reads (a reused keep-alive connection too), shorten a connect
to what is left, and refuse an attempt past the end (:class:`DeadlinePassed`). One daemon thread,
:class:`_Watchdog`, shuts the socket of any request whose end has come, which ends its read at once.
Used by the CVAT transport (``cvat.client``) and the webhook sender (``ops.alerts.delivery``).
"""

from __future__ import annotations

import functools
import math
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any


@dataclass(eq=False)
class Watch:
    """One request's deadline (a ``time.monotonic()`` value) and the socket it is reading now."""

    end: float
    sock: socket.socket | None = None
    cut: bool = False  # the deadline passed: the socket was shut, or a next attempt refused

    def left(self) -> float:
        return self.end - time.monotonic()


class DeadlinePassed(Exception):
    """Raised inside urllib3 when a watched request would start an attempt past its deadline; not
    one of the errors urllib3 retries, so it ends the request."""


class _Watchdog:
    """One daemon thread for every request of the process: at a request's deadline it shuts the
    socket that request reads, which ends the read however slowly the server trickles (a socket
    timeout restarts with every byte, so only a clock outside the read can bound it).

    Requests run on their callers' threads; the watchdog sleeps until the earliest deadline and is
    woken only when a request's deadline comes before that. (Each request on a thread of its own cost
    more CPU than the request itself: frames came down at 39% of a plain client's rate, issue 22.)
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._active: set[Watch] = set()
        self._wake_at = math.inf
        self._thread: threading.Thread | None = None

    def add(self, watch: Watch) -> None:
        with self._cond:
            self._active.add(watch)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="http deadlines", daemon=True)
                self._thread.start()
            if watch.end < self._wake_at:
                self._cond.notify()

    def discard(self, watch: Watch) -> None:
        with self._cond:
            self._active.discard(watch)

    def attach(self, watch: Watch, sock: socket.socket | None) -> None:
        """``sock`` is what the request reads from now on; past its deadline, no attempt starts."""
        with self._cond:
            if watch.cut or watch.left() <= 0:
                watch.cut = True
                raise DeadlinePassed
            watch.sock = sock

    def _run(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                for watch in [w for w in self._active if w.end <= now]:
                    self._active.discard(watch)
                    watch.cut = True
                    if watch.sock is not None:
                        with suppress(OSError):  # already closed: the request ended on its own
                            watch.sock.shutdown(socket.SHUT_RDWR)
                self._wake_at = min((w.end for w in self._active), default=math.inf)
                self._cond.wait(None if self._wake_at == math.inf else self._wake_at - now)


_WATCHDOG = _Watchdog()
_WATCH: ContextVar[Watch | None] = ContextVar("ropewatch_http_request", default=None)


def within_deadline(seconds: float) -> float:
    """``seconds`` shortened to what is left of the running request's deadline."""
    watch = _WATCH.get()
    return seconds if watch is None else max(0.0, min(seconds, watch.left()))


@contextmanager
def watching(end: float) -> Iterator[Watch]:
    """Requests made in this block, on this thread, end by ``end`` (a ``time.monotonic()`` value):
    past it their socket is shut (``Watch.cut`` says so). Only through :func:`watched_pools`."""
    watch = Watch(end)
    token = _WATCH.set(watch)
    _WATCHDOG.add(watch)
    try:
        yield watch
    finally:
        _WATCHDOG.discard(watch)
        _WATCH.reset(token)


@functools.cache
def watched_pools() -> dict[str, type]:
    """urllib3 pool classes whose connections tell the running request's watch which socket it reads
    (each attempt, a reused keep-alive connection too) and never connect past its deadline."""
    import urllib3
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    class Watched:
        sock: socket.socket | None
        timeout: Any

        def connect(self) -> None:
            watch = _WATCH.get()
            if watch is not None:
                _WATCHDOG.attach(watch, None)
                if isinstance(self.timeout, (int, float)):
                    self.timeout = max(0.001, within_deadline(self.timeout))
            super().connect()  # type: ignore[misc]

        def getresponse(self) -> Any:
            watch = _WATCH.get()
            if watch is not None:
                _WATCHDOG.attach(watch, self.sock)
            return super().getresponse()  # type: ignore[misc]

    class HTTPConnection(Watched, urllib3.connection.HTTPConnection):
        pass

    class HTTPSConnection(Watched, urllib3.connection.HTTPSConnection):
        pass

    class HTTPPool(HTTPConnectionPool):
        ConnectionCls = HTTPConnection

    class HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = HTTPSConnection

    return {"http": HTTPPool, "https": HTTPSPool}
