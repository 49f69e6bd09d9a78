"""The CVAT transport: typed connection settings, auth, the watched request with its deadlines, paging.

Bodies are read with ``_parse_response=False`` and decoded as JSON, not through the SDK's models:
a field the SDK does not know (a newer server) or one it expects but an older server lacks
(``score`` before CVAT 2.56) must never crash a nightly run. Retries with backoff on 429/5xx and
connection errors come from urllib3's ``Retry`` on the SDK's connection pool, with ``Retry-After``
capped (``RETRY_AFTER_CAP_S``). ``ConnectionSettings.timeout`` bounds one socket read; each request
(its retries and its whole body included) also has a total deadline, and each job one more
(``Connection.job_deadline``): a server that trickles bytes or answers a paged list whose ``next``
never ends cannot hold a run. A request runs on its caller's thread; one watchdog thread shuts the
socket of any request past its deadline (``cvat.deadline``). Answers that are not the JSON we
asked for, and credentials in the host URL, never reach a message. Every failure is a one-line
:class:`FetchError`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote, urlsplit

from ropewatch_core.errors import ServiceError
from ropewatch_core.records import one_line
from ropewatch_validator.cvat.deadline import watched_pools, watching, within_deadline

if TYPE_CHECKING:
    import urllib3

RETRY_STATUSES = (429, 500, 502, 503, 504)
RETRY_AFTER_CAP_S = 10.0  # a server's Retry-After beyond this is shortened to it
PAGE_SIZE = 500


class FetchError(ServiceError):
    """A one-line reason the job could not be pulled (auth, not found, server down)."""


@dataclass
class Connection:
    """The cvat-sdk API client and the host it talks to (the report names the host; never credentials).

    ``deadline_s`` bounds one request whole (retries, waits and body); ``job_deadline_at`` (a
    ``time.monotonic()`` value, set by :meth:`job_deadline`) bounds every request of the current job.
    """

    host: str
    api_client: Any
    timeout: tuple[float, float] = (10.0, 60.0)
    deadline_s: float = 300.0
    job_deadline_at: float | None = None

    @contextmanager
    def job_deadline(self, seconds: float | None) -> Iterator[None]:
        """Requests made inside the block fail once ``seconds`` have passed since it was entered."""
        self.job_deadline_at = None if seconds is None else time.monotonic() + seconds
        try:
            yield
        finally:
            self.job_deadline_at = None

    def remaining_s(self, what: str) -> tuple[float, str]:
        """Seconds the next request may take and which deadline that is; a FetchError once the
        job's deadline has passed."""
        request = (
            self.deadline_s,
            f"within {self.deadline_s:g} s (the request's total deadline, --deadline)",
        )
        if self.job_deadline_at is None:
            return request
        left = self.job_deadline_at - time.monotonic()
        if left <= 0:
            raise FetchError(f"{what} on {self.host}: the job's deadline has passed (--job-deadline)")
        return min(request, (left, "before the job's deadline (--job-deadline)"))


@dataclass(frozen=True)
class ConnectionSettings:
    """How to reach one CVAT server, built once by the CLI (``cli/validate.py:connection_settings``).

    ``basic_auth`` is ``(user, password)`` already resolved (the CLI prompts, never this module);
    credentials written into ``host`` (``http://user:pw@host``) are basic auth too, ``basic_auth`` wins.
    ``token`` is sent as ``Authorization: <scheme> <token>`` with the scheme of ``token_type``
    (``auto``, ``bearer``, ``token``; see :func:`token_scheme`). ``deadline`` bounds one request whole.
    """

    host: str
    port: int | None = None
    basic_auth: tuple[str, str] | None = None
    token: str | None = None
    token_type: str = "auto"
    timeout: float = 60.0
    retries: int = 5
    pool_size: int = 16
    deadline: float = 300.0


def _split(host: str) -> SplitResult:
    try:
        parts = urlsplit(host if "://" in host else f"http://{host}")
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise FetchError(
            f"--server-host {redact_url(host)} is not a URL (http[s]://host[:port][/path])"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FetchError(f"--server-host {redact_url(host)} is not an http(s) URL with a host name")
    return parts


def redact_url(host: str) -> str:
    """``host`` with any ``user:password@`` replaced by ``***@``: the one form used in messages."""
    scheme, sep, rest = host.partition("://")
    if not sep:
        scheme, rest = "", host
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    return f"{scheme}{sep}{netloc}{slash}{path}"


def url_credentials(host: str) -> tuple[str, str] | None:
    """``(user, password)`` written into the host URL (``http://user:pw@host``), else None."""
    parts = _split(host)
    if parts.username is None:
        return None
    return unquote(parts.username), unquote(parts.password or "")


def server_url(host: str, port: int | None) -> str:
    """Base URL without credentials; the default port 8080 (http) goes after the host, before a path."""
    parts = _split(host)
    name = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    path = parts.path.rstrip("/")
    if port:
        if parts.port:
            raise FetchError(f"--server-host {redact_url(host)} already has a port; drop --server-port")
        return f"{parts.scheme}://{name}:{port}{path}"
    if parts.port:
        return f"{parts.scheme}://{name}:{parts.port}{path}"
    return f"{parts.scheme}://{name}{'' if parts.scheme == 'https' else ':8080'}{path}"


def _retry_class() -> type[urllib3.util.Retry]:
    """urllib3's Retry with ``Retry-After`` capped: a server asking for minutes cannot stall a run,
    and no wait between attempts runs past the request's deadline."""
    import urllib3

    class CappedRetry(urllib3.util.Retry):
        def get_retry_after(self, response: Any) -> float | None:
            after = super().get_retry_after(response)
            return None if after is None else within_deadline(min(after, RETRY_AFTER_CAP_S))

        def get_backoff_time(self) -> float:
            return within_deadline(super().get_backoff_time())

    return CappedRetry


PAT_SINCE = (2, 48)  # personal access tokens ("Authorization: Bearer"); older servers: "Token <key>"


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def token_scheme(url: str, scheme: str, timeout: float) -> str:
    """``Bearer`` (personal access token, CVAT >= 2.48) or ``Token`` (key of ``POST /api/auth/login``,
    every version); ``auto`` asks ``/api/server/about`` (no auth needed) which the server has."""
    if scheme != "auto":
        return scheme.capitalize()
    import urllib3

    try:
        response = urllib3.request("GET", f"{url}/api/server/about", timeout=timeout, retries=2)
        version = json.loads(response.data).get("version", "")
    except (urllib3.exceptions.HTTPError, ValueError, AttributeError):
        raise FetchError(f"{url}: server unreachable or not answering (GET /api/server/about)") from None
    return "Bearer" if _version(version) >= PAT_SINCE else "Token"


def connect(settings: ConnectionSettings) -> Connection:
    """A cvat-sdk ApiClient with auth, timeouts and retries; secrets are kept out of every message.

    Credentials in the host URL are taken out of it, so ``Connection.host`` never carries them.
    """
    from cvat_sdk.api_client import ApiClient, Configuration

    url = server_url(settings.host, settings.port)
    timeout = settings.timeout
    config = Configuration(host=url)
    in_url = url_credentials(settings.host)
    if settings.basic_auth:
        config.username, config.password = settings.basic_auth
    elif in_url:
        config.username, config.password = in_url
    elif settings.token:
        if token_scheme(url, settings.token_type, min(10.0, timeout)) == "Bearer":
            config.access_token = settings.token
        else:
            config.api_key = {"tokenAuth": settings.token}
            config.api_key_prefix = {"tokenAuth": "Token"}
    config.retries = _retry_class()(
        total=settings.retries,
        backoff_factor=0.2,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,
        raise_on_status=False,
        respect_retry_after_header=True,
        backoff_max=10,
    )
    config.connection_pool_maxsize = settings.pool_size
    api_client = ApiClient(config)
    api_client.rest_client.pool_manager.pool_classes_by_scheme = watched_pools()
    return Connection(
        host=url,
        api_client=api_client,
        timeout=(min(10.0, timeout), timeout),
        deadline_s=settings.deadline,
    )


def _transport_reason(exc: BaseException) -> str:
    """What went wrong on the wire, named: a TLS failure is not an unreachable server."""
    import urllib3

    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, urllib3.exceptions.SSLError) or "SSL" in type(reason).__name__:
        return f"TLS handshake failed, is it an http:// server? ({one_line(reason, 200).split(': ', 1)[-1]})"
    if isinstance(reason, (urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        return "server not answering (read timed out; --timeout)"
    return f"server unreachable or not answering ({type(reason).__name__})"


def request_bytes(
    conn: Connection, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[bytes, Any]:
    """Call one generated API method and read its whole body within the request's deadline.

    The call runs on the caller's thread inside ``cvat.deadline.watching``: at the deadline the
    socket it reads is shut (which ends the read), and the request fails with one line, even when
    what was read by then looks whole. Returns (body, response).
    """
    import urllib3
    from cvat_sdk.api_client.exceptions import ApiException

    limit, which = conn.remaining_s(what)
    exc: Exception | None = None
    with watching(time.monotonic() + limit) as watch:
        try:
            _, response = method(*args, _parse_response=False, _request_timeout=conn.timeout, **kwargs)
            data = response.data
        except Exception as error:  # mapped to one line below
            exc = error
    if watch.cut:
        raise FetchError(f"{what} on {conn.host}: no complete answer {which}")
    if isinstance(exc, ApiException):
        hint = {
            401: "authentication failed (check --auth / CVAT_ACCESS_TOKEN)",
            403: "permission denied",
            404: "not found",
        }.get(exc.status, f"HTTP {exc.status} {exc.reason}")
        raise FetchError(f"{what} on {conn.host}: {hint}") from None
    if isinstance(exc, (urllib3.exceptions.HTTPError, OSError)):
        raise FetchError(f"{what} on {conn.host}: {_transport_reason(exc)}") from None
    if exc is not None:
        raise exc
    return data, response


def _endpoint(response: Any) -> str:
    path = str(getattr(response, "url", None) or "?")
    return urlsplit(path).path or path


def get_json(conn: Connection, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call one generated API method, return the decoded body; errors become one-line FetchErrors
    naming the host, the endpoint and what came back (an HTML login page, cut JSON...)."""
    data, response = request_bytes(conn, what, method, *args, **kwargs)
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        kind = (response.headers.get("Content-Type") or "no content type").split(";")[0]
        head = data[:60].decode("utf-8", "replace").replace("\n", " ").strip()
        raise FetchError(
            f"{what} on {conn.host} ({_endpoint(response)}): expected JSON, got HTTP {response.status} "
            f"{kind} starting {head!r}"
        ) from None


def list_all(conn: Connection, what: str, method: Callable[..., Any], **filters: Any) -> list[dict]:
    """Every page of a paginated list endpoint.

    Guards against a server whose paging never ends: the list stops once ``count`` items are read;
    a ``next`` URL already read, an empty page that still has a ``next``, or more pages than ``count``
    needs at the first page's size is a FetchError (the server may cap ``page_size`` below ours).
    """
    results: list[dict] = []
    seen: set[str] = set()
    page, pages = 1, None
    while True:
        body = get_json(conn, what, method, page=page, page_size=PAGE_SIZE, **filters)
        if not isinstance(body, dict) or not isinstance(body.get("results"), list):
            got = type(body).__name__ if not isinstance(body, dict) else f"keys {sorted(body)[:6]}"
            raise FetchError(f"{what} on {conn.host}: expected a page with 'results', got {got}")
        count, nxt = body.get("count"), body.get("next")
        if pages is None and isinstance(count, int) and body["results"]:
            pages = math.ceil(count / len(body["results"]))
        results += body["results"]
        if not nxt or (isinstance(count, int) and len(results) >= count):
            return results
        if not isinstance(nxt, str) or nxt in seen or not body["results"] or (pages and page >= pages):
            raise FetchError(
                f"{what} on {conn.host}: paging does not end (page {page} of {pages} by count {count} "
                f"points on to {redact_url(str(nxt))[:120]})"
            )
        seen.add(nxt)
        page += 1
