"""Fingerprint every frame of a job exactly as CVAT's lambda manager sends it to the function.

Which bytes does the function get? CVAT's lambda manager (``cvat/apps/lambda_manager/views.py``,
``_get_image``) calls ``TaskFrameProvider(db_task).get_frame(frame)`` with the defaults
``quality=ORIGINAL`` and ``out_type=BUFFER`` and base64-encodes ``image.data``. The REST endpoint
``GET /api/jobs/{id}/data?type=frame&number=N&quality=original`` goes through the same frame
provider (the job's segment provider, same ``ORIGINAL`` chunk, same ``BUFFER`` conversion), with
``number`` in task frame numbers like the lambda manager's ``frame``. So for image tasks both return
the original file's bytes and the sha256 agrees. For video tasks both decode the frame from the
original chunk and re-encode it to PNG with OpenCV (``cv2.imencode('.PNG')``): identical on one
server, but bytes can differ when CVAT/OpenCV was upgraded or chunks were rebuilt between the
auto-annotation and the validation; hence the decoded-pixel fingerprint as the fallback join key.
Decoding costs as much as downloading, so it is done only where bytes can change: ``pixels=False``
(image tasks) hashes the bytes and never decodes.
(``quality=compressed`` would be the JPEG-recompressed chunk — never what the function saw.)

Downloads run concurrently with a bound (``workers`` threads); each worker downloads and hashes, so
only small fingerprints stay in memory. Results are cached on disk, one JSON-lines file per
``(job, chunks_updated_date)`` keyed by frame, so a rebuilt chunk set (new date) is never served
from a stale cache and an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pandas as pd

from ropewatch_core.files import atomic_write
from ropewatch_core.records import one_line
from ropewatch_validator.cvat.client import Connection, request_bytes
from ropewatch_validator.cvat.fetch import JobData

FetchFrame = Callable[[int], bytes]
COLUMNS = ("frame", "sha256", "pixel_sha256", "width", "height", "bytes", "error")


def cvat_frame_fetcher(conn: Connection, job_id: int) -> FetchFrame:
    """Frame bytes through cvat-sdk, the endpoint and quality the lambda manager's path matches.

    The connection's timeout and total deadline apply to every frame: a stalled one fails alone
    instead of holding a worker forever (its retries and backoff come from the connection too).

    Each frame is the request ``jobs_api.retrieve_data(job_id, type="frame", number=n,
    quality="original")`` sends (the generated endpoint's own path, method, auth and ``Accept``),
    made through the SDK's ``ApiClient.call_api`` without the endpoint's per-call type check of its
    fourteen arguments: a quarter of the SDK's CPU per frame (issue 22), for an int and two constants.
    """
    api_client = conn.api_client
    endpoint = api_client.jobs_api.retrieve_data_endpoint
    settings = endpoint.settings
    accept = api_client.select_header_accept(endpoint.headers_map["accept"])

    def retrieve_frame(number: int, **options: Any) -> Any:
        return api_client.call_api(
            settings["endpoint_path"],
            settings["http_method"],
            {"id": job_id},
            [("number", number), ("quality", "original"), ("type", "frame")],  # the generated order
            {"Accept": accept},
            auth_settings=settings["auth"],
            **options,
        )

    def fetch(number: int) -> bytes:
        data, _ = request_bytes(conn, f"frame {int(number)} of job {job_id}", retrieve_frame, int(number))
        return data

    return fetch


def fingerprint(data: bytes, pixels: bool = True) -> dict:
    """The function's keys for one frame, computed by the function's own intake code.

    Without ``pixels`` only the bytes are hashed (no decode; width and height stay unknown).
    """
    from ropewatch_core.image import bytes_fingerprint, load_frame

    if not pixels:
        return {
            "sha256": bytes_fingerprint(data),
            "pixel_sha256": None,
            "width": None,
            "height": None,
            "bytes": len(data),
        }
    frame = load_frame(data)
    return {
        "sha256": frame.sha256,
        "pixel_sha256": frame.pixel_sha256,
        "width": frame.width,
        "height": frame.height,
        "bytes": frame.nbytes,
    }


def _cache_file(cache_dir: Path, host: str, job_id: int, chunks_updated_date: str) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "_", f"{host}_job{job_id}_{chunks_updated_date}").strip("_")
    return Path(cache_dir) / f"{slug}.jsonl"


def cached_frames(
    fetch: FetchFrame, cache_dir: Path | None, *, host: str, job_id: int, chunks_updated_date: str
) -> FetchFrame:
    """``fetch`` that keeps each frame's bytes on disk beside the fingerprint cache, for the few frames
    a report crops; same key, so rebuilt chunks are never served from a stale copy."""
    if cache_dir is None:
        return fetch
    folder = _cache_file(cache_dir, host, job_id, chunks_updated_date).with_suffix("")

    def get(number: int) -> bytes:
        path = folder / f"{int(number)}.bin"
        if path.is_file():
            return path.read_bytes()
        data = fetch(number)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)
        return data

    return get


def job_frame_fetcher(conn: Connection, job: JobData, cache_dir: Path | None) -> FetchFrame:
    """The frames of a fetched job (``fetch.Job``) through the disk cache: the one fetcher for the
    ``--logs`` crops and report.html's thumbnails, so a frame is downloaded once."""
    return cached_frames(
        cvat_frame_fetcher(conn, job.job_id),
        cache_dir,
        host=str(job.host),
        job_id=job.job_id,
        chunks_updated_date=job.chunks_updated_date or "unknown",
    )


def _read_cache(path: Path, pixels: bool) -> dict[int, dict]:
    """Good rows of an earlier run; with ``pixels``, only rows that carry the pixel fingerprint."""
    out: dict[int, dict] = {}
    if not path.is_file():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a line cut by an interrupted run
            continue
        if (
            isinstance(row, dict)
            and row.get("error") is None
            and "frame" in row
            and (row.get("pixel_sha256") is not None or not pixels)
        ):
            out[int(row["frame"])] = row
    return out


def _one(fetch: FetchFrame, frame: int, pixels: bool) -> dict:
    try:
        return {"frame": int(frame), **fingerprint(fetch(frame), pixels), "error": None}
    except Exception as exc:  # a frame that cannot be had is a row with its reason, never a failed report
        return {**dict.fromkeys(COLUMNS), "frame": int(frame), "error": one_line(exc)}


def frame_fingerprints(
    fetch: FetchFrame,
    frames: Iterable[int],
    *,
    job_id: int,
    chunks_updated_date: str,
    host: str = "",
    cache_dir: Path | None = None,
    workers: int = 8,
    pixels: bool = True,
    progress: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Fingerprints of ``frames`` (downloaded with at most ``workers`` in flight, cached on disk)."""
    frames = [int(f) for f in frames]
    path = _cache_file(cache_dir, host, job_id, chunks_updated_date) if cache_dir is not None else None
    cached = _read_cache(path, pixels) if path is not None else {}
    todo = [f for f in frames if f not in cached]
    rows = [cached[f] for f in frames if f in cached]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=max(1, workers)))
        sink = stack.enter_context(open(path, "a", encoding="utf-8")) if path is not None else None
        for row in pool.map(lambda f: _one(fetch, f, pixels), todo):
            rows.append(row)
            if sink is not None and row["error"] is None:
                sink.write(json.dumps(row) + "\n")
            if progress is not None:
                progress(1)
    return (
        pd.DataFrame(rows, columns=list(COLUMNS))
        .sort_values("frame", kind="mergesort")
        .reset_index(drop=True)
    )
