"""`ropewatch serve`: the read-only dashboard over the history store, served by uvicorn.

Loopback by default. Any other address needs a token (``$ROPEWATCH_SERVE_TOKEN`` or ``--token-file``)
unless ``--behind-proxy`` says a reverse proxy in front does the authentication. Exit code 2 with
one line when it cannot start; the token and the database password are never printed.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

from ropewatch_core.errors import InputError
from ropewatch_validator.cli.tokens import read_token_file, token_problem

ENV_TOKEN = "ROPEWATCH_SERVE_TOKEN"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "serve", help="read-only web dashboard of the history store", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--db",
        help="history store: SQLite path or SQLAlchemy URL (default $ROPEWATCH_DB or "
        "~/.local/share/ropewatch/history.sqlite)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    p.add_argument("--token-file", type=Path, help=f"file holding the access token (else env {ENV_TOKEN})")
    p.add_argument(
        "--behind-proxy",
        action="store_true",
        help="a reverse proxy authenticates users: no token needed on a public address; "
        "X-Forwarded-* headers from --forwarded-allow-ips are trusted",
    )
    p.add_argument("--forwarded-allow-ips", default="127.0.0.1", help="proxy addresses (with --behind-proxy)")
    p.add_argument(
        "--baseline-runs",
        type=int,
        default=5,
        help="unpinned own (drift) baseline = first N earlier runs (default 5, as in the rules file)",
    )
    p.set_defaults(func=run)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def port_problem(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be bound (taken, no such address), or None: one line instead of a
    server that starts and dies. Bound the way uvicorn binds (SO_REUSEADDR), then released."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def read_token(token_file: Path | None) -> str | None:
    """The token from ``--token-file`` (its first line) or the environment; None when neither is set."""
    if token_file is not None:
        return read_token_file(token_file)
    token = os.environ.get(ENV_TOKEN) or None
    problem = token_problem(token, ENV_TOKEN)
    if problem:
        raise InputError(problem)
    return token


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from ropewatch_validator.ops.history import default_db_url
    from ropewatch_validator.web.app import connection_label, create_app, read_only_engine
    from ropewatch_validator.web.store import ReadOnlyStore

    token = read_token(args.token_file)
    engine = read_only_engine(args.db or default_db_url())
    ReadOnlyStore(engine).check()  # not a ropewatch store, damaged, a hot journal: one line, exit 2
    if not is_loopback(args.host) and token is None and not args.behind_proxy:
        print(
            f"ropewatch serve: --host {args.host} is reachable from other machines: set {ENV_TOKEN} or "
            "--token-file, or pass --behind-proxy when a reverse proxy authenticates users",
            file=sys.stderr,
        )
        return 2
    problem = port_problem(args.host, args.port)
    if problem:
        print(f"ropewatch serve: cannot listen on {args.host}:{args.port}: {problem}", file=sys.stderr)
        return 2
    app = create_app(engine, token=token, baseline_runs=args.baseline_runs)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(
        f"ropewatch serve: {connection_label(engine)} at http://{shown}:{args.port}/"
        + (" (token required)" if token else ""),
        file=sys.stderr,
    )
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        proxy_headers=args.behind_proxy,
        forwarded_allow_ips=args.forwarded_allow_ips if args.behind_proxy else None,
        server_header=False,
    )
    return 0
