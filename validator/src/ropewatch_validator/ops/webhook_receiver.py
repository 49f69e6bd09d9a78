"""``ropewatch listen``: the receiver of CVAT's webhooks, which queues a job for validation once people
finished it.

CVAT 2.23.1 (``cvat/apps/webhooks/signals.py``) POSTs ``json.dumps(payload)`` with ``X-Signature-256:
sha256=<HMAC-SHA256 of those bytes with the webhook's secret>``; a redelivery (``POST
/api/webhooks/{id}/deliveries/{d}/redelivery``) sends the very same payload again, and there is no
delivery id in it -- and not the same bytes either: CVAT keeps the payload in a PostgreSQL ``jsonb``
column, which reorders its keys (seen on 2.23.1). So: a body whose signature does not verify
(constant-time compare) is answered 401 and nothing is stored; a verified body is recorded by the
sha256 of its canonical JSON (keys sorted, compact), and one seen before (a redelivery, or a replay
of captured bytes) is answered 200 ``duplicate`` without queueing anything. An
``update:job`` whose ``state`` became ``completed`` or whose ``stage`` became ``acceptance`` queues
the job (host from the job's ``url``) in the history store's ``validation_queue``, in the same
transaction as the body's record; in team mode (a PostgreSQL store) it is also deferred at once as a
procrastinate task for the workers (``handoff``). A receiver that is down loses nothing that matters:
CVAT records the failed delivery, and the scheduled ``validate-job --project N --since last`` (or the
workers' periodic scan) validates the job.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

if TYPE_CHECKING:
    from ropewatch_validator.ops.history import HistoryStore

log = structlog.get_logger("ropewatch.listen")

SIGNATURE_HEADER = "X-Signature-256"
MAX_BODY = 1 << 20  # CVAT's job bodies are a few KiB


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verified(secret: bytes, body: bytes, header: str | None) -> bool:
    return header is not None and hmac.compare_digest(header.encode(), signature(secret, body).encode())


def digest(payload: Any) -> str:
    """The identity of a webhook body whatever its key order and spacing."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def trigger(payload: Any) -> tuple[str, int, str] | None:
    """(host, job id, reason) when this webhook says a job is ready to validate, else None."""
    if not isinstance(payload, dict) or payload.get("event") != "update:job":
        return None
    job, before = payload.get("job"), payload.get("before_update") or {}
    if not isinstance(job, dict) or not isinstance(before, dict) or not isinstance(job.get("id"), int):
        return None
    if "state" in before and job.get("state") == "completed":
        reason = "state:completed"
    elif "stage" in before and job.get("stage") == "acceptance":
        reason = "stage:acceptance"
    else:
        return None
    parts = urlsplit(str(job.get("url") or ""))
    if not parts.scheme or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}", int(job["id"]), reason


class Handoff(Protocol):
    """Where a queued job goes besides the store's ``validation_queue`` (team mode: the procrastinate
    queue, ``app.queue.QueueHandoff``); ``lifespan`` opens it on the server's event loop."""

    def lifespan(self, app: Any) -> AbstractAsyncContextManager[None]: ...

    async def __call__(self, host: str, job_id: int) -> bool: ...


def make_app(
    store: HistoryStore, secret: bytes, path: str = "/cvat-webhook", handoff: Handoff | None = None
) -> Starlette:
    from ropewatch_validator.ops.loop_store import accept_webhook

    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "body too large"}, status_code=413)
        if not verified(secret, body, request.headers.get(SIGNATURE_HEADER)):
            return JSONResponse({"error": "signature does not verify"}, status_code=401)
        try:
            payload = json.loads(body)
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        job = trigger(payload)
        event = str(payload.get("event", "")) if isinstance(payload, dict) else ""
        fresh = accept_webhook(store, digest(payload), event[:64], job)
        if fresh and job and handoff is not None:
            try:
                await handoff(job[0], job[1])
            except Exception as exc:  # the request boundary: the job is in validation_queue already
                log.warning("handoff_failed", job=job[1], error=" ".join(str(exc).split())[:300])
        status = "duplicate" if not fresh else "queued" if job else "ignored"
        return JSONResponse({"status": status, **({"job": job[1]} if job else {})})

    return Starlette(
        routes=[Route(path, receive, methods=["POST"])],
        lifespan=handoff.lifespan if handoff is not None else None,
    )
