"""Frame download over real HTTP through cvat-sdk: endpoint, quality, bounded concurrency, disk cache."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from ropewatch_validator.cvat.client import ConnectionSettings, connect, request_bytes
from ropewatch_validator.cvat.frames import cvat_frame_fetcher, frame_fingerprints
from ropewatch_validator.evaluation.match import Settings
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.trace.section import TraceOptions, trace_job
from support.tracegen import records_for_job


def _png(seed: int) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


class _Frames:
    """Answers /api/jobs/5/data?type=frame&number=N&quality=original; records what it was asked."""

    def __init__(self, frames: dict[int, bytes]) -> None:
        self.frames, self.seen = frames, []

    def __call__(self, request: Request) -> Response:
        self.seen.append(dict(request.args))
        n = int(request.args["number"])
        if n not in self.frames:
            return Response('{"detail": "not found"}', status=404, content_type="application/json")
        return Response(self.frames[n], content_type="image/png")


class _Counting:
    """Counts downloads in flight on the client side (the test server answers one at a time)."""

    def __init__(self, fetch) -> None:
        self.fetch, self.in_flight, self.peak, self.lock = fetch, 0, 0, threading.Lock()

    def __call__(self, n: int) -> bytes:
        with self.lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(0.005)
            return self.fetch(n)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_fingerprints_equal_the_served_bytes_and_pixels(httpserver: HTTPServer, cvat_conn, tmp_path) -> None:
    frames = {n: _png(n) for n in range(10, 30)}
    handler = _Frames(frames)
    httpserver.expect_request("/api/jobs/5/data").respond_with_handler(handler)
    fetch = _Counting(cvat_frame_fetcher(cvat_conn, 5))
    wanted = [*frames, 99]  # 99: the server has no such frame
    out = frame_fingerprints(
        fetch, wanted, job_id=5, chunks_updated_date="2026-11-23T08:00:00Z", cache_dir=tmp_path, workers=4
    )
    assert all(q == {"type": "frame", "number": q["number"], "quality": "original"} for q in handler.seen)
    assert 1 < fetch.peak <= 4
    ok = out[out["error"].isna()].set_index("frame")
    for n, data in frames.items():
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert ok.loc[n, "sha256"] == hashlib.sha256(data).hexdigest()
        assert ok.loc[n, "pixel_sha256"] == hashlib.sha256(rgb.tobytes()).hexdigest()
        assert (ok.loc[n, "width"], ok.loc[n, "height"]) == (32, 24)
    bad = out[out["frame"] == 99].iloc[0]
    assert pd.isna(bad["sha256"]) and "frame 99 of job 5" in bad["error"] and "not found" in bad["error"]

    # second run: every good frame from the cache, only the failed one asked again
    handler.seen.clear()
    again = frame_fingerprints(
        fetch, wanted, job_id=5, chunks_updated_date="2026-11-23T08:00:00Z", cache_dir=tmp_path, workers=4
    )
    assert [int(q["number"]) for q in handler.seen] == [99]
    assert again.drop(columns="error").equals(out.drop(columns="error"))
    # rebuilt chunks (new date): the cache does not apply
    handler.seen.clear()
    frame_fingerprints(
        fetch,
        list(frames)[:3],
        job_id=5,
        chunks_updated_date="2026-11-24T00:00:00Z",
        cache_dir=tmp_path,
        workers=2,
    )
    assert len(handler.seen) == 3


def test_bytes_only_fingerprints_skip_decoding(httpserver: HTTPServer, cvat_conn, tmp_path) -> None:
    """An image task needs no pixel hash; a later run that does need it does not trust those rows."""
    frames = {n: _png(n) for n in range(6)}
    frames[6] = b"not an image"  # undecodable bytes still have a byte fingerprint
    handler = _Frames(frames)
    httpserver.expect_request("/api/jobs/5/data").respond_with_handler(handler)
    fetch = cvat_frame_fetcher(cvat_conn, 5)
    kw = dict(job_id=5, chunks_updated_date="d1", cache_dir=tmp_path, workers=3)
    out = frame_fingerprints(fetch, list(frames), pixels=False, **kw).set_index("frame")
    assert out["error"].isna().all() and out["pixel_sha256"].isna().all() and out["width"].isna().all()
    assert out["sha256"].to_dict() == {n: hashlib.sha256(b).hexdigest() for n, b in frames.items()}
    assert out["bytes"].to_dict() == {n: len(b) for n, b in frames.items()}

    handler.seen.clear()
    full = frame_fingerprints(fetch, list(frames), pixels=True, **kw).set_index("frame")
    assert sorted(int(q["number"]) for q in handler.seen) == sorted(frames)
    assert full.loc[list(range(6)), "pixel_sha256"].notna().all() and full.loc[6, "error"] is not None
    handler.seen.clear()
    frame_fingerprints(fetch, list(frames), pixels=False, **kw)  # pixel rows serve a bytes-only run too
    assert handler.seen == []


@pytest.mark.parametrize(
    "auth",
    [
        dict(token="t0ken", token_type="bearer"),
        dict(token="k3y", token_type="token"),
        dict(basic_auth=("al", "pw")),
    ],
)
def test_a_frame_is_the_request_the_generated_retrieve_data_sends(httpserver: HTTPServer, auth) -> None:
    """The fetcher skips only the endpoint's type check: method, path, query (in order) and every
    header equal those of ``jobs_api.retrieve_data(..., type="frame", number=n, quality="original")``."""
    seen: list[tuple] = []

    def record(request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        seen.append((request.method, request.path, request.query_string, headers))
        return Response(b"frame bytes", content_type="image/png")

    httpserver.expect_request("/api/jobs/5/data").respond_with_handler(record)
    conn = connect(ConnectionSettings(httpserver.url_for("").rstrip("/"), **auth))
    assert cvat_frame_fetcher(conn, 5)(7) == b"frame bytes"
    data, _ = request_bytes(
        conn, "frame 7", conn.api_client.jobs_api.retrieve_data, 5, type="frame", number=7, quality="original"
    )
    assert data == b"frame bytes"
    assert seen[0] == seen[1]
    assert seen[0][2] == b"number=7&quality=original&type=frame" and "Authorization" in seen[0][3]


def test_a_stalled_frame_times_out_alone(tmp_path) -> None:
    """CVAT stops answering for one frame: that frame is an error row, the others arrive, nothing hangs."""
    frames = {n: _png(n) for n in range(8)}
    state = sandbox.CvatState(frames={(5, n): data for n, data in frames.items()})
    state.fail(0, count=1, path_contains="number=3&", delay_s=4.0)
    with sandbox.serve(state) as (url, _):
        fetch = cvat_frame_fetcher(connect(ConnectionSettings(url, timeout=0.5, retries=0)), 5)
        started = time.perf_counter()
        out = frame_fingerprints(
            fetch,
            list(frames),
            job_id=5,
            chunks_updated_date="d",
            cache_dir=tmp_path,
            workers=4,
            pixels=False,
        ).set_index("frame")
        elapsed = time.perf_counter() - started
    assert elapsed < 3.0  # bounded by the timeout, not by the stalled answer
    assert "timed out" in out.loc[3, "error"].lower() and pd.isna(out.loc[3, "sha256"])
    others = out.drop(index=3)
    assert others["error"].isna().all()
    assert others["sha256"].to_dict() == {
        n: hashlib.sha256(b).hexdigest() for n, b in frames.items() if n != 3
    }


def test_trace_job_end_to_end_over_http(httpserver: HTTPServer, cvat_conn, tmp_path) -> None:
    """Logs written for known frames; the validator downloads the frames and recovers every object."""
    rng = np.random.default_rng(4)
    frames = {n: _png(100 + n) for n in range(12)}
    httpserver.expect_request("/api/jobs/5/data").respond_with_handler(_Frames(frames))
    rows = []
    for n in frames:
        for k, src in enumerate(["auto", "auto", "semi-auto", "manual"][: 1 + n % 4]):
            rows.append(
                dict(
                    shape_id=len(rows) + 1,
                    frame=n,
                    label="person",
                    type="rectangle",
                    source=src,
                    x1=2.0 + 40 * k,
                    y1=10.0,
                    x2=32.0 + 40 * k,
                    y2=110.0,
                    safety_rope_use=["wrong", "correct"][(n + k) % 2],
                )
            )
    shapes = pd.DataFrame(rows)
    oracle = pd.DataFrame(
        {
            "frame": list(frames),
            "sha256": [hashlib.sha256(b).hexdigest() for b in frames.values()],
            "pixel_sha256": [
                hashlib.sha256(np.asarray(Image.open(io.BytesIO(b)).convert("RGB")).tobytes()).hexdigest()
                for b in frames.values()
            ],
            "width": 32,
            "height": 24,
        }
    )
    when = datetime(2026, 11, 23, 7, tzinfo=timezone.utc)
    records, expected = records_for_job(
        shapes,
        oracle,
        rng=rng,
        when=when,
        cutoff=when + timedelta(hours=1),
        corrected_share=0.5,
        deleted_share=0.5,
        reencoded_share=0.3,
        rerun_share=0.3,
        unlogged_frames=[11],
    )
    log = tmp_path / "fn.log"
    log.write_text("\n".join(json.dumps(r) for r in records) + "\nnot json\n")
    job = SimpleNamespace(
        frames=pd.DataFrame({"frame": list(frames), "deleted": False}),
        shapes=shapes,
        job_id=5,
        host=httpserver.url_for(""),
        job_updated_date=(when + timedelta(hours=1)).isoformat(),
        original_chunk_type="video",
        chunks_updated_date="2026-11-23T08:00:00Z",
        labels={},  # no label defaults: no mapping check
    )
    trace = trace_job(
        job, cvat_conn, TraceOptions((log,)), Settings(), cache_dir=tmp_path / "cache", workers=3
    ).model_dump()
    counts = trace["lifecycle"]["counts"]
    assert counts == {k: expected[k] for k in counts}
    assert all(v > 0 for k, v in counts.items() if k != "attribute_unmapped"), counts
    assert counts["attribute_unmapped"] == 0  # the label default is unknown here: no mapping check
    assert trace["frames"]["by_pixel_sha256"] == expected["by_pixel_sha256"] > 0
    assert trace["frames"]["pixel_fingerprint"] is True
    assert trace["frames"]["reruns"] == expected["reruns"] > 0 and trace["frames"]["unjoined_frames"] == [11]
    assert trace["logs"]["skipped"] == 1 and trace["model_versions"] == ["test-v1"]
    for o in trace["objects"]:
        if o["request_id"] is not None:
            box = next(r for r in records if r["request_id"] == o["request_id"])["detections"][
                o["det_index"]
            ]["box"]
            assert o["logit"] == expected["scores"][(o["frame"], tuple(box))]
