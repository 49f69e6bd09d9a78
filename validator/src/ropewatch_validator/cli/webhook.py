"""`ropewatch webhook` and `ropewatch listen`: validation triggered by CVAT (ops/webhook_receiver.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ropewatch_core.errors import InputError
from ropewatch_validator.cli.validate import add_connection_arguments, check_connection_arguments

if TYPE_CHECKING:
    from ropewatch_validator.app.queue import QueueHandoff
    from ropewatch_validator.ops.history import HistoryStore

SECRET_ENV = "ROPEWATCH_CVAT_WEBHOOK_SECRET"


def _secret_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--secret-env", default=SECRET_ENV, help=f"env var holding the secret (default {SECRET_ENV})"
    )
    p.add_argument(
        "--secret-file", type=Path, help="file holding the secret (surrounding whitespace stripped)"
    )


def _secret(args: argparse.Namespace) -> str:
    """The shared secret; never printed. A receiver or a webhook without one is refused."""
    if args.secret_file:
        try:
            value = args.secret_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise InputError(f"--secret-file {args.secret_file}: cannot read it ({exc.strerror})") from None
    else:
        value = os.environ.get(args.secret_env, "").strip()
    if not value:
        raise InputError(f"no webhook secret: set ${args.secret_env} or give --secret-file")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    w = subparsers.add_parser("webhook", help="CVAT webhooks that trigger validation")
    sub = w.add_subparsers(dest="webhook_command", required=True, metavar="ACTION")
    r = sub.add_parser(
        "register", help="create a CVAT project webhook for update:job pointing at `ropewatch listen`"
    )
    r.add_argument("--project", type=int, required=True, help="the CVAT project")
    r.add_argument(
        "--url", required=True, help="where `ropewatch listen` is reachable from CVAT (…/cvat-webhook)"
    )
    _secret_arguments(r)
    add_connection_arguments(r)
    r.set_defaults(func=run_register)
    q = sub.add_parser("queue", help="jobs queued for validation by webhooks, not yet validated")
    q.add_argument("--db", help="history store (default $ROPEWATCH_DB or ~/.local/share/ropewatch/...)")
    q.set_defaults(func=run_queue)
    d = sub.add_parser(
        "drain",
        help="validate the queued jobs of one CVAT server (validate-job options after --)",
        description="Run validate-job on each queued job of --server-host; the options after -- go to it.",
    )
    d.add_argument("--db", help="history store (also given to validate-job)")
    d.add_argument("--server-host", required=True, help="the CVAT server whose queued jobs to validate")
    d.add_argument(
        "validate_args", nargs=argparse.REMAINDER, help="-- then validate-job options (--auth, --out…)"
    )
    d.set_defaults(func=run_drain)

    listen = subparsers.add_parser(
        "listen", help="receive CVAT webhooks and queue finished jobs for validation"
    )
    listen.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    listen.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    listen.add_argument("--path", default="/cvat-webhook", help="the webhook's path (default /cvat-webhook)")
    listen.add_argument("--db", help="history store (default $ROPEWATCH_DB or ~/.local/share/ropewatch/...)")
    _secret_arguments(listen)
    listen.set_defaults(func=run_listen)


def run_register(args: argparse.Namespace) -> int:
    from ropewatch_validator.cli.validate import connect_from_args
    from ropewatch_validator.cvat.webhooks import create_webhook

    problem = check_connection_arguments(args)
    if problem:
        raise InputError(problem)
    secret = _secret(args)
    webhook = create_webhook(connect_from_args(args), args.project, args.url, secret)
    print(f"project {args.project}: webhook {webhook} for update:job -> {args.url}")
    return 0


def run_queue(args: argparse.Namespace) -> int:
    from ropewatch_validator.ops.history import open_store
    from ropewatch_validator.ops.loop_store import queued_jobs

    store = open_store(args.db)
    try:
        jobs = queued_jobs(store)
    finally:
        store.close()
    for j in jobs:
        print(f"{j.queued_at}  {j.host}  job {j.job_id}  {j.reason}")
    print(f"{len(jobs)} job(s) queued")
    return 0


def run_drain(args: argparse.Namespace) -> int:
    """Each queued job of the server through validate-job (in this process); marked done once it ran
    (exit 0 or 1), kept queued when it could not (exit 2) so the next drain tries again."""
    from ropewatch_validator.cli.main import validate_job_main
    from ropewatch_validator.cli.validate import server_host
    from ropewatch_validator.cvat.client import server_url
    from ropewatch_validator.ops.history import default_db_url, open_store
    from ropewatch_validator.ops.loop_store import mark_done, queued_jobs

    rest = args.validate_args[1:] if args.validate_args[:1] == ["--"] else args.validate_args
    db = args.db or default_db_url()
    given = server_host(args)
    host = server_url(given, None)
    store = open_store(db)
    try:
        jobs = queued_jobs(store, host)
        worst = 0
        for j in jobs:
            code = validate_job_main([str(j.job_id), "--server-host", given, "--db", db, *rest])
            if code in (0, 1):
                mark_done(store, j.id, f"validate-job exit {code}")
            print(f"job {j.job_id} ({j.reason}): validate-job exit {code}")
            worst = max(worst, code)
    finally:
        store.close()
    print(f"{len(jobs)} queued job(s) of {host} run")
    return worst


def _handoff(store: HistoryStore) -> QueueHandoff | None:
    """Team mode: on the team's PostgreSQL the workers' queue takes each job at once (the store's
    ``validation_queue`` keeps it too, for ``webhook drain``); on SQLite there is no queue."""
    from ropewatch_validator.app.queue import QueueHandoff, apply_schema, conninfo_of

    if store.engine.dialect.name != "postgresql":
        return None
    conninfo = conninfo_of(store.engine.url.render_as_string(hide_password=False))
    handoff = QueueHandoff(conninfo)
    apply_schema(handoff.app, conninfo)
    return handoff


def run_listen(args: argparse.Namespace) -> int:
    import uvicorn

    from ropewatch_validator.ops.history import open_store
    from ropewatch_validator.ops.webhook_receiver import make_app

    secret = _secret(args).encode()
    store = open_store(args.db)
    handoff = _handoff(store)
    try:
        print(f"listening on http://{args.host}:{args.port}{args.path}", flush=True)
        app = make_app(store, secret, args.path, handoff)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        store.close()
    return 0
