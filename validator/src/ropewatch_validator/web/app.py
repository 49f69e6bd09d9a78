"""The dashboard as a Starlette application: GET pages only, rendered from ``render/templates``.

Pages: ``/`` model versions, ``/trend?version=V&n=10``, ``/version?name=V`` (labels, errors, jobs),
``/jobs?project=&task=&version=&page=``, ``/runs/{id}`` (the job's report page), ``/alerts``,
``/healthz`` (checks the store). Nothing here writes: the store is opened read-only and checked on
every request (``web.store``); a store that cannot answer is a 503 with one line.

Access: without a token the app answers everyone who can reach it (loopback by default). With a
token, a request needs ``Authorization: Bearer <token>`` or the ``ropewatch_token`` cookie, which
``?token=<token>`` on any page sets (the page then reloads without it, so the token does not stay
in the address bar or the history). The token is compared in constant time and never rendered.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from ropewatch_core.errors import ServiceError
from ropewatch_validator.ops import baselines
from ropewatch_validator.ops.history import DEFAULT_BASELINE_RUNS, HistoryStore
from ropewatch_validator.render import html, svg
from ropewatch_validator.render.model import Report
from ropewatch_validator.web import queries
from ropewatch_validator.web.store import ReadOnlyStore, StoreUnavailable, read_only_engine

__all__ = ["connection_label", "create_app", "read_only_engine"]

log = logging.getLogger(__name__)

COOKIE = "ropewatch_token"
VERSION_WINDOW = 200  # runs read for a version's label table
MAX_ID = 2**63 - 1  # the largest id a store can hold (SQLite INTEGER, PostgreSQL BIGINT)


class BadQuery(ValueError):
    """A query parameter that cannot be used; answered with 400 and the one-line reason."""


def _int(request: Request, name: str, default: int | None = None, lo: int = 0, hi: int = 10**9) -> int | None:
    raw = request.query_params.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadQuery(f"{name} must be a whole number, got {raw[:40]!r}") from None
    if not lo <= value <= hi:
        raise BadQuery(f"{name} must be between {lo} and {hi}")
    return value


class Dashboard:
    """The pages, over the store's current engine (``web.store``: a replaced file is reopened)."""

    def __init__(self, engine: Engine, baseline_runs: int = DEFAULT_BASELINE_RUNS, *, guarded: bool = False):
        self.source = ReadOnlyStore(engine)
        self.baseline_runs = baseline_runs
        self.guarded = guarded  # a token guards the pages, but not /healthz: it then names no path

    @property
    def engine(self) -> Engine:
        return self.source.engine()

    @property
    def store(self) -> HistoryStore:
        return HistoryStore(self.engine)

    @contextmanager
    def conn(self) -> Iterator[sa.Connection]:
        with self.source.connect() as conn:
            yield conn

    def page(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(html.render(template, nav=True, **context), status_code=status)

    # -- pages ------------------------------------------------------------------------------
    def versions(self, request: Request) -> Response:
        with self.conn() as conn:
            rows = queries.versions(conn)
            names = queries.classes(conn)
        metrics = queries.version_metrics(names)
        changes = {
            r["model_version"]: baselines.version_changes(self.store, r["model_version"], metrics)
            for r in rows
        }
        return self.page("dash_versions.html", versions=rows, classes=names, changes=changes)

    def trend(self, request: Request) -> Response:
        version = request.query_params.get("version", "")
        n = _int(request, "n", 10, 1, 1000)
        base_ids, pinned = self.store.baseline_runs(version, self.baseline_runs)
        with self.conn() as conn:
            t = queries.trend(conn, version, n or 10, base_ids)
            names = queries.classes(conn)
        labels = [f"job {r['job_id']}" for r in t.runs]
        f1 = svg.line_chart(
            labels,
            [(f"F1 {c}", [r[f"{c}_f1"] for r in t.runs], t.baseline[f"{c}_f1"]) for c in names],
            y_range=(0.0, 1.0),
        )
        flips = svg.line_chart(
            labels,
            [("flips per 1,000", [r["flips_per_1000"] for r in t.runs], t.baseline["flips_per_1000"])],
        )
        return self.page(
            "dash_trend.html",
            version=version,
            n=n,
            trend=t,
            f1_chart=f1,
            flips_chart=flips,
            pinned=pinned,
            classes=names,
        )

    def version(self, request: Request) -> Response:
        name = request.query_params.get("name", "")
        page = _int(request, "page", 1, 1)
        with self.conn() as conn:
            blocks = queries.version_labels(conn, name, VERSION_WINDOW)
            rows, total = queries.jobs(conn, queries.Filters(version=name, page=page or 1))
            names = queries.classes(conn)
        return self.page(
            "dash_version.html",
            version=name,
            table=queries.label_table(blocks),
            window=VERSION_WINDOW,
            jobs=rows,
            total=total,
            pager=_pager(request, page or 1, total),
            classes=names,
        )

    def jobs(self, request: Request) -> Response:
        filters = queries.Filters(
            project=_int(request, "project"),
            task=_int(request, "task"),
            version=request.query_params.get("version") or None,
            page=_int(request, "page", 1, 1) or 1,
        )
        with self.conn() as conn:
            rows, total = queries.jobs(conn, filters)
            options = queries.choices(conn)
            names = queries.classes(conn)
            failed = queries.queue_failures(conn)
        return self.page(
            "dash_jobs.html",
            failed=failed,
            jobs=rows,
            total=total,
            filters=filters,
            options=options,
            pager=_pager(request, filters.page, total),
            classes=names,
        )

    def run(self, request: Request) -> Response:
        run_id = int(request.path_params["run_id"])
        with self.conn() as conn:
            row = queries.run_row(conn, run_id) if run_id <= MAX_ID else None
        if row is None:
            return self.page("dash_missing.html", status=404, what=f"run {run_id}")
        report = Report.model_validate(row["report"])
        compared = baselines.comparisons(
            self.store, row["model_version"], html.kpi_metrics(report), self.baseline_runs, before_run=run_id
        )
        with self.conn() as conn:
            fired = queries.run_alerts(conn, run_id)
        return HTMLResponse(html.report_page(report, comparisons=compared, nav=True, fired=fired))

    def alerts(self, request: Request) -> Response:
        with self.conn() as conn:
            rows = queries.alert_list(conn)
        return self.page("dash_alerts.html", alerts=rows)

    def healthz(self, request: Request) -> Response:
        """Say ok only when the store answers and is a ropewatch store; else 503 with the reason
        (which goes to the log only when a token guards the pages: probes need no token)."""
        try:
            self.source.check()
        except StoreUnavailable as exc:
            log.warning("healthz: %s", exc)
            if self.guarded:
                return PlainTextResponse("history store unavailable (the reason is in the log)", 503)
            raise
        return PlainTextResponse("ok")


def _pager(request: Request, page: int, total: int, per_page: int = queries.PAGE) -> dict[str, Any]:
    def link(p: int) -> str:
        params = dict(request.query_params)
        params["page"] = str(p)
        return f"{request.url.path}?{urlencode(params)}"

    last = max(1, -(-total // per_page))
    return {
        "page": page,
        "last": last,
        "prev": link(page - 1) if page > 1 else None,
        "next": link(page + 1) if page < last else None,
    }


class TokenGate(BaseHTTPMiddleware):
    """Requires the token on every request (see the module doc)."""

    def __init__(self, app: ASGIApp, token: str):
        super().__init__(app)
        self.token = token.encode()

    def _ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token)

    async def dispatch(self, request: Request, call_next: Callable) -> Response:
        if request.url.path == "/healthz":  # probes: says "ok" and nothing else
            return await call_next(request)
        query_token = request.query_params.get("token")
        if query_token is not None and self._ok(query_token):
            params = {k: v for k, v in request.query_params.items() if k != "token"}
            path = "/" + request.url.path.lstrip("/")  # never "//host": that would leave the site
            target = path + (f"?{urlencode(params)}" if params else "")
            response = RedirectResponse(target, status_code=303)
            secure = request.url.scheme == "https"
            response.set_cookie(COOKIE, query_token, httponly=True, samesite="strict", secure=secure)
            return response
        header = request.headers.get("authorization", "")
        bearer = header[7:] if header.lower().startswith("bearer ") else None
        if self._ok(bearer) or self._ok(request.cookies.get(COOKIE)):
            return await call_next(request)
        return PlainTextResponse(
            "token required: open any page once with ?token=<token>, or send Authorization: Bearer <token>",
            status_code=401,
        )


class Headers(BaseHTTPMiddleware):
    """No page loads anything from elsewhere (CSP), is framed, or is cached by a shared proxy."""

    async def dispatch(self, request: Request, call_next: Callable) -> Response:
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = html.csp()
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cache-Control"] = "private, no-store"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response


def create_app(
    engine: Engine, *, token: str | None = None, baseline_runs: int = DEFAULT_BASELINE_RUNS
) -> Starlette:
    dash = Dashboard(engine, baseline_runs, guarded=bool(token))
    middleware = [Middleware(Headers)]
    if token:
        middleware.append(Middleware(TokenGate, token=token))
    routes = [
        Route("/", dash.versions),
        Route("/trend", dash.trend),
        Route("/version", dash.version),
        Route("/jobs", dash.jobs),
        Route("/runs/{run_id:int}", dash.run),
        Route("/alerts", dash.alerts),
        Route("/healthz", dash.healthz),
    ]
    handlers = {BadQuery: _bad_request, ServiceError: _unavailable}
    return Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)


async def _bad_request(request: Request, exc: Exception) -> Response:
    return PlainTextResponse(str(exc), status_code=400)


async def _unavailable(request: Request, exc: Exception) -> Response:
    """The store cannot answer (gone, replaced by something else, locked, damaged): one line."""
    return PlainTextResponse(str(exc), status_code=503)


def connection_label(engine: Engine) -> str:
    """The store as shown in logs: the SQLite file, or the URL without its password."""
    if engine.dialect.name == "sqlite" and engine.url.database:
        return engine.url.database.removeprefix("file:")
    return engine.url.render_as_string(hide_password=True)
