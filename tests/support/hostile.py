"""A CVAT stand-in that misbehaves at the socket level (what pytest-httpserver cannot do)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def raw_server(respond: Callable[[socket.socket], None]) -> Iterator[str]:
    """An HTTP receiver that reads each request's head and body (by Content-Length) and hands the
    socket to ``respond``, which writes whatever it likes: a trickled head, an endless body."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    def handle(conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, body = data.split(b"\r\n\r\n", 1)
            length = next(
                (
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                ),
                0,
            )
            while len(body) < length:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                body += chunk
            try:
                respond(conn)
            except OSError:
                return  # the client hung up: what these servers test

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        listener.close()


@contextmanager
def trickling_server(interval_s: float, body_bytes: int = 100_000) -> Iterator[str]:
    """An HTTP server that sends a valid 200 head and then one body byte every ``interval_s``
    (a :func:`raw_server` that drips until the client hangs up, the block ends, or ``body_bytes``
    are sent). A test of a deadline D sizes the body to take several times D: a client whose deadline
    does not hold then gets the whole answer (blank, not JSON) and fails on a different error, so the
    test needs no clock of its own."""
    stop = threading.Event()

    def drip(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        conn.sendall(f"Content-Length: {body_bytes}\r\n\r\n".encode())
        for _ in range(body_bytes):
            if stop.is_set():
                return
            conn.sendall(b" ")
            time.sleep(interval_s)

    with raw_server(drip) as url:
        try:
            yield url
        finally:
            stop.set()
