"""Webhook delivery of the history store's outbox, over ``requests``.

Delivery is at least once: a fired alert is queued per webhook in the same transaction as its run
and leaves the outbox only after a 2xx; receivers drop repeats by the ``Idempotency-Key`` header
(derived from host, job, job_updated_date and rule, so one job state never yields two alerts).

What a receiver cannot do (issue 18): make us follow a redirect (a 3xx is a failed delivery, so the
signed body and its key never reach another host), hold validate-job past ``timeout_s`` (a deadline
for the whole delivery: connecting, every read, the waits between retries, a trickled answer; a
``Retry-After`` is capped and never waited past the deadline), or fill memory (the answer's body is
never read: the status line and headers are all a delivery needs).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
import structlog
import urllib3
from pydantic import ValidationError
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from ropewatch_validator.cvat.deadline import DeadlinePassed, watched_pools, watching
from ropewatch_validator.ops.alerts.messages import render_body
from ropewatch_validator.ops.alerts.model import Alert
from ropewatch_validator.ops.alerts.rules import ConfigError, Webhook
from ropewatch_validator.ops.history import HistoryStore

log = structlog.get_logger("ropewatch.alert")

SIGNATURE_HEADER = "X-Ropewatch-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
RETRY_AFTER_CAP_S = 30.0  # the longest a receiver's Retry-After makes us wait (never past the deadline)


@dataclass(frozen=True)
class DeliveryResult:
    sent: int = 0
    failed: int = 0
    errors: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def total(cls, steps: Sequence[DeliveryResult]) -> DeliveryResult:
        return cls(
            sum(s.sent for s in steps),
            sum(s.failed for s in steps),
            tuple(e for s in steps for e in s.errors),
        )


def sign(body: bytes, secret: bytes) -> str:
    """``sha256=<hex>`` HMAC over the exact body, as GitHub-style receivers verify it."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Deadline:
    """The end of one delivery, over all its attempts and the waits between them. Each attempt runs
    inside ``cvat.deadline.watching`` (the transport's one watchdog), so a receiver that trickles its
    answer a byte at a time (each read within the socket timeout) still cannot hold it longer."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def passed(self) -> bool:
        return self.remaining() <= 0.0


class _GuardedAdapter(HTTPAdapter):
    """requests' adapter with the guarded connections and no retries of its own (``Notifier.post``
    retries, within the deadline); redirects are urllib3's to refuse, and it is told not to follow."""

    def __init__(self) -> None:
        super().__init__(max_retries=Retry(total=0, redirect=False, raise_on_redirect=False))

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = watched_pools()


def webhook_session() -> requests.Session:
    session = requests.Session()
    adapter = _GuardedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def failure_reason(exc: requests.RequestException) -> str:
    """Why a POST failed, by exception type only: ``str(exc)`` embeds the URL, and Slack/Teams URLs
    carry a token."""
    cause = exc.args[0] if exc.args else None
    if isinstance(cause, urllib3.exceptions.MaxRetryError) and cause.reason is not None:
        return type(cause.reason).__name__
    return type(cause).__name__ if isinstance(cause, Exception) else type(exc).__name__


def _wait_asked(value: str | None) -> float | None:
    """A ``Retry-After`` in seconds (delta or HTTP date), None when absent or unreadable."""
    if not value:
        return None
    try:
        return Retry().parse_retry_after(value)
    except urllib3.exceptions.InvalidHeader:
        return None


@dataclass(frozen=True)
class _Attempt:
    status: int | None = None
    retry_after: float | None = None
    error: str | None = None


class Notifier:
    """Sends the store's outbox to the configured webhooks, one ``requests`` session per webhook."""

    def __init__(self, webhooks: Sequence[Webhook]):
        self.webhooks = {h.name: h for h in webhooks}
        self.sessions = {h.name: webhook_session() for h in webhooks}
        # (alert, target) pairs this run already tried: a batch flushes after every job that fired,
        # and a receiver that refused once is tried again on the next run, not once per later job
        self.tried: set[tuple[str, str]] = set()

    @property
    def targets(self) -> list[str]:
        return list(self.webhooks)

    def _attempt(self, hook: Webhook, body: bytes, headers: dict[str, str], deadline: Deadline) -> _Attempt:
        timeout = max(deadline.remaining(), 0.001)
        try:
            with watching(deadline.end):
                resp = self.sessions[hook.name].post(
                    hook.url,
                    data=body,
                    headers=headers,
                    timeout=(timeout, timeout),
                    allow_redirects=False,
                    stream=True,
                )
                resp.close()  # the body is never read: a status line and headers are the answer
        except (requests.RequestException, DeadlinePassed) as exc:
            if deadline.passed() or isinstance(exc, DeadlinePassed):  # the second: no attempt past the end
                return _Attempt(error=f"no answer within timeout_s={hook.timeout_s:g} (the whole delivery)")
            return _Attempt(error=f"request failed: {failure_reason(exc)}")
        return _Attempt(resp.status_code, _wait_asked(resp.headers.get("Retry-After")))

    def post(self, hook: Webhook, alert: Alert) -> str | None:
        """POST one alert, retrying timeouts, connection errors, 429 and 5xx with exponential backoff,
        all within ``timeout_s``; None on a 2xx, else a reason without the URL."""
        body = render_body(alert, hook.format)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "ropewatch",
            IDEMPOTENCY_HEADER: alert.key,
        }
        try:
            secret = hook.secret()
        except ConfigError as exc:
            return str(exc)
        if secret:
            headers[SIGNATURE_HEADER] = sign(body, secret)
        deadline = Deadline(hook.timeout_s)
        reason = ""
        for attempt in range(hook.retries + 1):
            got = self._attempt(hook, body, headers, deadline)
            if got.status is not None and 200 <= got.status < 300:
                return None
            if got.status is not None and 300 <= got.status < 400:
                return f"HTTP {got.status}: redirects are not followed (configure the final URL)"
            if got.status is not None and got.status not in RETRY_STATUSES:
                return f"HTTP {got.status}"
            reason = got.error or f"HTTP {got.status}"
            if attempt == hook.retries or deadline.passed():
                break
            wait = min(RETRY_AFTER_CAP_S, got.retry_after or hook.backoff_s * 2**attempt)
            if wait >= deadline.remaining():
                return f"{reason}; a retry in {wait:g} s would pass timeout_s={hook.timeout_s:g}"
            time.sleep(wait)
        return (
            f"gave up after {attempt} retries: {reason}" if attempt else f"{reason} (no retries configured)"
        )

    def flush(self, store: HistoryStore) -> DeliveryResult:
        """Try every pending delivery once per run (with its retries); undelivered ones stay pending."""
        sent, errors = 0, []
        for item in store.pending():
            if (item.alert_key, item.target) in self.tried:
                continue
            self.tried.add((item.alert_key, item.target))
            hook = self.webhooks.get(item.target)
            try:
                alert: Alert | None = Alert.model_validate(item.payload)
            except ValidationError:  # a payload no release wrote in full: kept, and said so each run
                alert = None
            error: str | None
            if alert is None:
                error = "the stored alert is incomplete (written by an older ropewatch) and cannot be sent"
            elif hook is None:
                error = f"webhook {item.target!r} is no longer configured"
            else:
                error = self.post(hook, alert)
            store.mark_delivery(item.alert_key, item.target, error)
            fields = {"target": item.target, "rule": item.payload.get("rule"), "job": item.payload.get("job")}
            fields["key"] = item.alert_key
            if error is None:
                sent += 1
                log.info("alert_delivered", **fields)
            else:
                errors.append(f"{item.target}: {error}")
                log.warning("alert_undelivered", error=error, attempts=item.attempts + 1, **fields)
        return DeliveryResult(sent, len(errors), tuple(errors))
