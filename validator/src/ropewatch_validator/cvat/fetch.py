"""Pull one CVAT job through cvat-sdk into plain tables.

Bodies are read with ``_parse_response=False`` and decoded as JSON, not through the SDK's models:
a field the SDK does not know (a newer server) or one it expects but an older server lacks
(``score`` before CVAT 2.56) must never crash a nightly run. Retries with backoff on 429/5xx and
connection errors come from urllib3's ``Retry`` on the SDK's connection pool, with ``Retry-After``
capped (``RETRY_AFTER_CAP_S``). ``--timeout`` bounds one socket read; each request (its retries and
its whole body included) also has a total deadline, and each job one more (``Connection.job_deadline``):
a server that trickles bytes or answers a paged list whose ``next`` never ends cannot hold a run.
Answers that are not the JSON we asked for, and credentials in the host URL, never reach a message.

``JobData`` fields:
- ``frames``: DataFrame ``frame, name, width, height, deleted`` (task-absolute frame numbers);
- ``shapes``: DataFrame, one row per rectangle (tracks expanded to per-frame boxes, ``outside``
  respected, rectangles interpolated between keyframes as CVAT does): ``shape_id, track_id, frame,
  label, type, x1, y1, x2, y2, source, score (NaN when absent), occluded`` plus one column per
  attribute name holding its value (None when unset); deleted frames are dropped;
- ``skipped``: counts of shapes and tracks not read as boxes, by type (polygon, mask, skeleton, tag …).
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote, urlsplit

import numpy as np
import pandas as pd

from ropewatch_core.errors import ServiceError

if TYPE_CHECKING:
    import urllib3

RETRY_STATUSES = (429, 500, 502, 503, 504)
RETRY_AFTER_CAP_S = 10.0  # a server's Retry-After beyond this is shortened to it
PAGE_SIZE = 500
MAX_JOB_FRAMES = 10_000_000  # more frames than any CVAT job has: a bound on what a job body may ask for
SHAPE_COLUMNS = [
    "shape_id",
    "track_id",
    "frame",
    "label",
    "type",
    "x1",
    "y1",
    "x2",
    "y2",
    "source",
    "rotation",
    "score",
    "occluded",
]


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


@dataclass
class Label:
    name: str
    attributes: dict[int, tuple[str, list[str]]]  # spec_id -> (name, values)
    defaults: dict[str, str] = field(default_factory=dict)  # attribute name -> default_value


@dataclass
class JobData:
    host: str
    job_id: int
    task_id: int
    project_id: int | None
    job_updated_date: str
    job_type: str
    frames: pd.DataFrame
    labels: dict[int, Label]
    shapes: pd.DataFrame
    skipped: Counter = field(default_factory=Counter)
    has_score: bool = True
    dropped: Counter = field(default_factory=Counter)  # shapes and attribute entries not read, by reason
    original_chunk_type: str = ""  # "imageset" or "video": decides whether frame bytes can change
    chunks_updated_date: str = ""  # version of the job's frame chunks (the frame cache's key)
    deleted_digest: str = (
        ""  # of the deleted frames ("" without): part of the history key (see deleted_digest)
    )


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
    """urllib3's Retry with ``Retry-After`` capped: a server asking for minutes cannot stall a run."""
    import urllib3

    class CappedRetry(urllib3.util.Retry):
        def get_retry_after(self, response: Any) -> float | None:
            after = super().get_retry_after(response)
            return None if after is None else min(after, RETRY_AFTER_CAP_S)

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
    return Connection(
        host=url,
        api_client=ApiClient(config),
        timeout=(min(10.0, timeout), timeout),
        deadline_s=settings.deadline,
    )


def _one_line(exc: BaseException) -> str:
    """``Type: first line`` of an error, for a message that must stay one line."""
    text = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _transport_reason(exc: BaseException) -> str:
    """What went wrong on the wire, named: a TLS failure is not an unreachable server."""
    import urllib3

    reason = getattr(exc, "reason", None) or exc
    if isinstance(reason, urllib3.exceptions.SSLError) or "SSL" in type(reason).__name__:
        return f"TLS handshake failed, is it an http:// server? ({_one_line(reason).split(': ', 1)[-1]})"
    if isinstance(reason, (urllib3.exceptions.ReadTimeoutError, TimeoutError)):
        return "server not answering (read timed out; --timeout)"
    return f"server unreachable or not answering ({type(reason).__name__})"


def request_bytes(
    conn: Connection, what: str, method: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[bytes, Any]:
    """Call one generated API method and read its whole body within the request's deadline.

    The call runs in a daemon thread: a socket read timeout restarts with every byte, so only a
    clock outside the read can bound a server that trickles. At the deadline the response socket is
    shut (which ends the read) and the request fails with one line. Returns (body, response).
    """
    import urllib3
    from cvat_sdk.api_client.exceptions import ApiException

    limit, which = conn.remaining_s(what)
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            _, box["response"] = method(*args, _parse_response=False, _request_timeout=conn.timeout, **kwargs)
            box["data"] = box["response"].data
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    worker = threading.Thread(target=call, name=f"cvat {what}", daemon=True)
    worker.start()
    worker.join(limit)
    if worker.is_alive():
        response = box.get("response")
        if response is not None:
            response.shutdown()
        raise FetchError(f"{what} on {conn.host}: no complete answer {which}")
    exc = box.get("error")
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
    return box["data"], box["response"]


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


def parse_labels(bodies: list[dict]) -> dict[int, Label]:
    labels = {}
    for body in bodies:
        attrs = {a["id"]: (a["name"], list(a.get("values") or [])) for a in body.get("attributes", [])}
        defaults = {a["name"]: a.get("default_value") for a in body.get("attributes", [])}
        labels[body["id"]] = Label(body["name"], attrs, defaults)
        for sub in body.get("sublabels") or []:
            labels.setdefault(sub["id"], Label(sub["name"], {}))
    return labels


def frame_step(meta: dict) -> int:
    """The ``step=N`` of a task's ``frame_filter`` (1 without one)."""
    for part in (meta.get("frame_filter") or "").split(","):
        if part.strip().startswith("step="):
            return int(part.strip()[5:])
    return 1


def frames_table(job: dict, meta: dict) -> pd.DataFrame:
    """The frames really in the job, as CVAT 2.23's ``data/meta`` describes them.

    Job and annotation frame numbers are task frames (``job.start_frame..stop_frame``); ``meta`` gives
    data frames (``start_frame``, GT ``included_frames``:
    data = meta.start_frame + (frame - job start) * step).
    A video lists one ``frames`` entry for the whole file; an image job one per frame of its range, frames
    outside a GT job's set named ``placeholder.jpg``: only ``included_frames`` are kept. ``real_frame`` is
    the frame itself; for a honeypot the caller sets the validation frame it shows (:func:`fetch_honeypots`).
    """
    start, stop = int(job["start_frame"]), int(job["stop_frame"])
    frames = np.arange(start, stop + 1, dtype=np.int64)
    data = int(meta.get("start_frame") or 0) + (frames - start) * frame_step(meta)
    entries = meta.get("frames") or []
    if job.get("data_original_chunk_type") == "video" or (len(entries) == 1 and len(frames) > 1):
        first = entries[0] if entries else {}
        names = [f"frame_{d:06d}" for d in data]  # CVAT's dataset item names for video frames
        widths, heights = [first.get("width") or 0] * len(frames), [first.get("height") or 0] * len(frames)
    elif len(entries) != len(frames):
        raise ValueError(f"data/meta lists {len(entries)} frames for frames {start}-{stop}")
    else:
        names = [e.get("name") for e in entries]
        widths, heights = [e.get("width") or 0 for e in entries], [e.get("height") or 0 for e in entries]
    table = pd.DataFrame(
        {
            "frame": frames,
            "data_frame": data,
            "real_frame": frames,
            "name": names,
            "width": widths,
            "height": heights,
            "deleted": np.isin(frames, meta.get("deleted_frames") or []),
        }
    )
    included = meta.get("included_frames")
    keep = np.isin(data, included) if included is not None else np.ones(len(frames), bool)
    return table[keep].reset_index(drop=True)


def _attr_values(attributes: list[dict], label: Label | None) -> dict[str, Any]:
    if label is None:
        return {}
    known = label.attributes
    return {known[a["spec_id"]][0]: a.get("value") for a in attributes if a.get("spec_id") in known}


def attribute_drops(annotations: dict, labels: dict[int, Label]) -> Counter:
    """Attribute entries no value can be read from, by reason: ``attribute_without_spec_id`` and
    ``unknown_spec_id`` (not an attribute of the shape's label); ``unknown_label_id`` counts shapes
    and tracks whose label the job does not list."""
    drops: Counter = Counter()
    for item in [*annotations.get("shapes", []), *annotations.get("tracks", [])]:
        label = labels.get(item.get("label_id"))
        if label is None:
            drops["unknown_label_id"] += 1
            continue
        entries = list(item.get("attributes") or [])
        entries += [a for key in item.get("shapes") or [] for a in key.get("attributes") or []]
        for a in entries:
            if "spec_id" not in a:
                drops["attribute_without_spec_id"] += 1
            elif a["spec_id"] not in label.attributes:
                drops["unknown_spec_id"] += 1
    return +drops


def keyframes_in_job(annotations: dict, start: int, stop: int) -> tuple[dict, Counter]:
    """``annotations`` without track keyframes outside the job's frames (CVAT splits tracks per job,
    so only a broken server sends them; expanding one at frame -10**20 would never end), counted."""
    tracks, outside = [], 0
    for track in annotations.get("tracks", []):
        keys = [k for k in track.get("shapes", []) if start <= int(k["frame"]) <= stop]
        outside += len(track.get("shapes", [])) - len(keys)
        tracks.append({**track, "shapes": keys})
    return {**annotations, "tracks": tracks}, +Counter({"track_keyframe_outside_job": outside})


def drop_off_job(shapes: pd.DataFrame, frames: pd.DataFrame, job: dict) -> tuple[pd.DataFrame, Counter]:
    """Keep shapes on the job's live frames; count the others (CVAT accepts, returns and then ignores
    shapes outside the job's frame range; shapes on deleted frames are not evaluated either)."""
    start = int(job.get("start_frame", 0))
    stop = int(job.get("stop_frame", frames["frame"].max() if len(frames) else 0))
    in_range = shapes["frame"].between(start, stop)
    live = shapes["frame"].isin(frames.loc[~frames["deleted"], "frame"])
    skipped = Counter(
        {"outside_job_frames": int((~in_range).sum()), "on_deleted_frames": int((in_range & ~live).sum())}
    )
    return shapes[live].reset_index(drop=True), +skipped


def _angle_diff(right: float, left: float) -> float:
    """CVAT's ``find_angle_diff`` (dataset_manager/annotation.py), odd branch for -180 included."""
    diff = ((right - left + 180) % 360) - 180
    if abs(diff) >= 180:
        diff = 360 - abs(diff) * -1 if diff > 0 else 1
    return diff


def expand_track(track: dict, stop_frame: int) -> list[dict]:
    """Per-frame rectangles of a track as CVAT's quality control reads them.

    ``TrackManager.get_interpolated_shapes`` (CVAT 2.23, dataset_manager/annotation.py): from every
    visible keyframe, points and rotation are interpolated toward the next keyframe, **even an outside
    one**; keyframes on deleted frames still take part (only their own frame is dropped, by the caller);
    after the last keyframe, if visible, it is repeated up to ``stop_frame``. Outside rows are left out.
    Rows: ``frame``, ``points`` (4), ``rotation``, ``occluded``, ``attributes`` (the keyframe's, which
    CVAT's read fills from the previous keyframe).
    """
    out: list[dict] = []
    prev: dict | None = None
    end = stop_frame + 1
    for key in sorted(track["shapes"], key=lambda s: s["frame"]):
        if prev is not None and not prev.get("outside"):
            p0, p1 = np.asarray(prev["points"][:4], float), np.asarray(key["points"][:4], float)
            r0, r1 = float(prev.get("rotation") or 0.0), float(key.get("rotation") or 0.0)
            span = key["frame"] - prev["frame"]
            for frame in range(prev["frame"] + 1, min(key["frame"], end)):
                t = (frame - prev["frame"]) / span
                out.append(
                    {
                        **prev,
                        "frame": frame,
                        "points": list(p0 + (p1 - p0) * t),
                        "rotation": (r0 + _angle_diff(r1, r0) * t + 360) % 360,
                    }
                )
        if key["frame"] >= end:
            break
        out.append(key)
        prev = key
    if prev is not None and not prev.get("outside"):
        out += [{**prev, "frame": frame} for frame in range(prev["frame"] + 1, end)]
    first = track.get("frame", 0)
    return [
        {
            "frame": s["frame"],
            "points": [float(v) for v in s["points"][:4]],
            "rotation": float(s.get("rotation") or 0.0),
            "occluded": bool(s.get("occluded")),
            "attributes": s.get("attributes", []),
        }
        for s in out
        if first <= s["frame"] and not s.get("outside")
    ]


def _row(
    shape_id: int | None,
    track_id: int | None,
    frame: int,
    label: str,
    points: Sequence[float],
    rotation: float | None,
    source: str,
    score: float,
    occluded: bool | None,
    values: dict[str, Any],
) -> dict:
    x1, y1, x2, y2 = points[:4]
    return {
        "shape_id": shape_id,
        "track_id": track_id,
        "frame": frame,
        "label": label,
        "type": "rectangle",
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "rotation": float(rotation or 0.0),
        "source": source,
        "score": score,
        "occluded": bool(occluded),
        **values,
    }


def shapes_table(
    annotations: dict, labels: dict[int, Label], stop_frame: int
) -> tuple[pd.DataFrame, Counter, bool]:
    """Rectangles of shapes and expanded tracks as one table; other types counted in ``skipped``."""
    skipped: Counter = Counter()
    rows: list[dict] = []
    has_score = False

    def name(label_id: int) -> str:
        return labels[label_id].name if label_id in labels else str(label_id)

    for shape in annotations.get("shapes", []):
        if shape.get("type") != "rectangle":
            skipped[shape.get("type", "unknown")] += 1
            continue
        has_score |= "score" in shape
        values = _attr_values(shape.get("attributes", []), labels.get(shape["label_id"]))
        rows.append(
            _row(
                shape.get("id"),
                None,
                shape["frame"],
                name(shape["label_id"]),
                shape["points"],
                shape.get("rotation"),
                shape.get("source", "manual"),
                shape.get("score", np.nan),
                shape.get("occluded"),
                values,
            )
        )
    for track in annotations.get("tracks", []):
        kinds = {s.get("type") for s in track.get("shapes", [])}
        if kinds != {"rectangle"}:
            skipped[f"track:{'/'.join(sorted(k or 'unknown' for k in kinds)) or 'empty'}"] += 1
            continue
        label = labels.get(track["label_id"])
        fixed = _attr_values(track.get("attributes", []), label)
        for row in expand_track(track, stop_frame):
            values = {**fixed, **_attr_values(row["attributes"], label)}
            rows.append(
                _row(
                    None,
                    track.get("id"),
                    row["frame"],
                    name(track["label_id"]),
                    row["points"],
                    row["rotation"],
                    track.get("source", "manual"),
                    np.nan,
                    row["occluded"],
                    values,
                )
            )
    skipped["tag"] += len(annotations.get("tags", []))
    table = pd.DataFrame(rows) if rows else pd.DataFrame(columns=SHAPE_COLUMNS)
    table["score"] = table["score"].astype(float)
    table["shape_id"] = table["shape_id"].astype("Int64")
    table["track_id"] = table["track_id"].astype("Int64")
    # one order whatever the server's: CVAT returns shapes in database order, not id order
    table = table.sort_values(["frame", "track_id", "shape_id"], kind="stable", na_position="first")
    return table.reset_index(drop=True), +skipped, has_score


def fetch_job(conn: Connection, job_id: int) -> JobData:
    """Job, labels, frame meta and annotations of one job (see :func:`job_tables`)."""
    api = conn.api_client
    job = get_json(conn, f"job {job_id}", api.jobs_api.retrieve, job_id)
    labels = list_all(conn, f"labels of job {job_id}", api.labels_api.list, job_id=job_id)
    meta = get_json(conn, f"frame meta of job {job_id}", api.jobs_api.retrieve_data_meta, job_id)
    annotations = get_json(conn, f"annotations of job {job_id}", api.jobs_api.retrieve_annotations, job_id)
    return job_tables(conn.host, job_id, job, labels, meta, annotations)


def job_tables(host: str, job_id: int, job: Any, labels: list, meta: Any, annotations: Any) -> JobData:
    """The tables of one job from its API bodies; shapes off its live frames are counted and dropped.

    A body of another shape than CVAT's (a field missing, a list where an object belongs) is a
    one-line FetchError naming the job and the host, never a KeyError from deep inside.
    """
    try:
        label_table = parse_labels(labels)
        frames = frames_table(job, meta)
        stop = int(job["stop_frame"])
        start = int(job["start_frame"])
        if not 0 <= stop - start <= MAX_JOB_FRAMES:
            raise FetchError(f"job {job_id} on {host}: frames {start}-{stop} are not a job's frame range")
        annotations, outside = keyframes_in_job(annotations, start, stop)
        shapes, skipped, has_score = shapes_table(annotations, label_table, stop)
        shapes, off = drop_off_job(shapes, frames, job)
        dropped = attribute_drops(annotations, label_table) + off + outside
        return JobData(
            host=host,
            job_id=job_id,
            task_id=job.get("task_id"),
            project_id=job.get("project_id"),
            job_updated_date=job.get("updated_date", ""),
            job_type=job.get("type", "annotation"),
            frames=frames,
            labels=label_table,
            shapes=shapes,
            skipped=skipped,
            has_score=has_score,
            dropped=dropped,
            original_chunk_type=str(job.get("data_original_chunk_type") or ""),
            chunks_updated_date=str(meta.get("chunks_updated_date") or ""),
            deleted_digest=deleted_digest(meta),
        )
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        raise FetchError(f"job {job_id} on {host}: unexpected answer from CVAT ({_one_line(exc)})") from None


def deleted_digest(meta: dict) -> str:
    """What changes a job's numbers without moving its ``updated_date``: on CVAT 2.23 deleting or
    restoring frames changes neither ``updated_date`` nor ``chunks_updated_date``. "" without deleted
    frames, else the first 16 hex of the sha256 of the sorted ``deleted_frames``."""
    deleted = sorted(meta.get("deleted_frames") or [])
    return hashlib.sha256(json.dumps(deleted).encode()).hexdigest()[:16] if deleted else ""


def fetch_deleted_digest(conn: Connection, job_id: int) -> str:
    """:func:`deleted_digest` of a listed job, from its ``data/meta`` alone (one small request)."""
    return deleted_digest(
        get_json(conn, f"frame meta of job {job_id}", conn.api_client.jobs_api.retrieve_data_meta, job_id)
    )


def fetch_honeypots(conn: Connection, job_id: int) -> dict[int, int]:
    """Honeypot frame -> the validation frame it shows (``GET /api/jobs/{id}/validation_layout``, CVAT
    >= 2.22; tasks with ``validation_mode: gt_pool`` only)."""
    body = get_json(
        conn,
        f"validation layout of job {job_id}",
        conn.api_client.jobs_api.retrieve_validation_layout,
        job_id,
    )
    return dict(zip(body.get("honeypot_frames") or [], body.get("honeypot_real_frames") or []))


def find_jobs(
    conn: Connection,
    *,
    task_id: int | None = None,
    project_id: int | None = None,
    job_type: str | None = None,
) -> list[dict]:
    """Job bodies of a task or project (paged), optionally of one type (``annotation``, ``ground_truth``)."""
    filters = {k: v for k, v in {"task_id": task_id, "project_id": project_id, "type": job_type}.items() if v}
    return list_all(
        conn,
        "jobs " + " ".join(f"{k}={v}" for k, v in filters.items()),
        conn.api_client.jobs_api.list,
        **filters,
    )
