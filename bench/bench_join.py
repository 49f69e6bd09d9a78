"""Benchmark: join N log lines to an F-frame job whose frames come from the fake CVAT server.

Prints, from one run: the fake server's own frame throughput (plain concurrent keep-alive GETs that
only read the body), the same GETs through cvat-sdk's own urllib3 pool, and cvat-sdk's download alone,
in ``--rounds`` interleaved turns (median of each, and their ratios), then the validator's frame
download + fingerprint throughput through cvat-sdk with the same number of workers (and the ratio)
for an image task (bytes hashed) and a video task (also decoded for the pixel fingerprint), log
reading, join + lifecycle + calibration time, the peak RSS after each stage, and whether the
lifecycle counts equal the generated ones. The log stage (read + join) runs in a process of its own
(``--log-stage``, started by the bench), so its peak RSS is the validator's alone: the in-process fake
server's frames are not in it.

    .venv/bin/python bench/bench_join.py                  # 1,000,000 lines, 10,000 frames
    .venv/bin/python bench/bench_join.py --lines 200000 --frames 2000   # quicker

The log records come from the suite's generator (tests/support/tracegen.py, the function's record
contract); the script puts tests/ on its own path, so it runs as shown from the repository root.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import importlib
import io
import json
import pickle
import resource
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import urllib3
from _protocol import add_arguments, finish, interleaved, ratio_line, start
from PIL import Image

from ropewatch_validator.cvat.client import Connection, ConnectionSettings, connect
from ropewatch_validator.cvat.frames import cvat_frame_fetcher, frame_fingerprints
from ropewatch_validator.sandbox import server as sandbox

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the suite's record generator
from support.tracegen import inference_record, records_for_job

WHEN = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
CUTOFF = WHEN + timedelta(hours=3)


def peak_rss_mib() -> float:
    """This process image's peak RSS: Linux's ``VmHWM``. Not ``getrusage``'s ``ru_maxrss``, which a
    child keeps across ``execve`` from the fork of its parent, so the log stage would report the
    fake server's frames it never held."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_frames(n: int, width: int, height: int, rng: np.random.Generator) -> dict[int, bytes]:
    """Distinct JPEG frames: a shared noisy background with a per-frame block."""
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = {}
    for f in range(n):
        img = base.copy()
        img[:8, :8] = np.frombuffer(hashlib.sha256(b"%d" % f).digest()[:24] * 8, np.uint8)[:192].reshape(
            8, 8, 3
        )
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        out[f] = buf.getvalue()
    return out


def make_shapes(n_frames: int, rng: np.random.Generator) -> pd.DataFrame:
    rows, sid = [], 0
    for f in range(n_frames):
        for k in range(int(rng.integers(0, 6))):
            sid += 1
            x = 50.0 * k + 5
            rows.append(
                dict(
                    shape_id=sid,
                    frame=f,
                    label="person",
                    type="rectangle",
                    source=rng.choice(["auto", "auto", "semi-auto", "manual"]),
                    x1=x,
                    y1=20.0,
                    x2=x + 40.0,
                    y2=150.0,
                    safety_rope_use=rng.choice(["wrong", "correct"]),
                )
            )
    return pd.DataFrame(rows)


def server_throughput(base_url: str, job_id: int, frames: list[int], workers: int) -> float:
    """Frames/s the server delivers to plain keep-alive clients that only read the body."""
    parts = urlsplit(base_url)
    local = threading.local()

    def get(n: int) -> int:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        local.conn.request("GET", f"/api/jobs/{job_id}/data?type=frame&number={n}&quality=original")
        resp = local.conn.getresponse()
        return len(resp.read())

    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        total = sum(pool.map(get, frames))
    assert total > 0
    return len(frames) / (time.perf_counter() - t)


def pool_throughput(conn: Connection, job_id: int, frames: list[int], workers: int) -> float:
    """Frames/s through cvat-sdk's own urllib3 pool (its retries, timeouts and deadline watch) without
    the SDK's layer above it: where the rest of the gap to the plain client lies."""
    pool = conn.api_client.rest_client.pool_manager
    url = f"{conn.host}/api/jobs/{job_id}/data"
    timeout = urllib3.Timeout(connect=conn.timeout[0], read=conn.timeout[1])

    def get(n: int) -> int:
        fields = [("number", n), ("quality", "original"), ("type", "frame")]
        return len(pool.request("GET", url, fields=fields, timeout=timeout).data)

    t = time.perf_counter()
    with ThreadPoolExecutor(workers) as workers_pool:
        total = sum(workers_pool.map(get, frames))
    assert total > 0
    return len(frames) / (time.perf_counter() - t)


def write_logs(path: Path, records: list[dict], n_lines: int, rng: np.random.Generator) -> None:
    """The job's records shuffled into ``n_lines`` lines of other frames' records and noise."""
    filler = inference_record(
        sha256="0" * 64,
        pixel_sha256="1" * 64,
        width=1280,
        height=720,
        boxes=[[10.0, 20.0, 50.0, 150.0]],
        logits=[1.0],
        timestamp=WHEN,
    )
    n_other = max(0, n_lines - len(records))
    slots = (
        set(rng.choice(n_lines, size=len(records), replace=False).tolist())
        if n_other
        else set(range(len(records)))
    )
    it = iter(records)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(max(n_lines, len(records))):
            if i in slots:
                fh.write(json.dumps(next(it)) + "\n")
            elif i % 50 == 0:
                fh.write("2026-11-23T09:00:00Z processor (I) Worker ready\n")
            else:
                filler["image"]["sha256"] = hashlib.sha256(b"o%d" % i).hexdigest()
                filler["image"]["pixel_sha256"] = hashlib.sha256(b"p%d" % i).hexdigest()
                filler["request_id"] = str(i)
                fh.write(json.dumps(filler) + "\n")


def log_stage(folder: Path) -> dict:
    """Read ``folder``'s log and join it to its job, timed, in this process: what ``validate-job --logs``
    does after the download, with its peak RSS after each step (the validator's alone)."""
    t = time.perf_counter()
    from ropewatch_validator.trace.logs import read_logs
    from ropewatch_validator.trace.section import trace_section

    for lazy in ("calibration", "join", "lifecycle", "stages"):  # imported inside trace_section
        importlib.import_module(f"ropewatch_validator.trace.{lazy}")
    import_s = time.perf_counter() - t
    rss = {"imports": peak_rss_mib()}
    with open(folder / "job.pkl", "rb") as fh:
        job, fps = pickle.load(fh)
    rss["job"] = peak_rss_mib()
    t = time.perf_counter()
    keys = set(fps["sha256"].dropna()) | set(fps["pixel_sha256"].dropna())
    logs = read_logs([folder / "function.log"], keys=keys)
    read_s = time.perf_counter() - t
    rss["read"] = peak_rss_mib()
    t = time.perf_counter()
    trace = trace_section(job, logs, fps, cutoff=pd.Timestamp(CUTOFF)).model_dump()
    join_s = time.perf_counter() - t
    rss["join"] = peak_rss_mib()
    return {
        "import_s": import_s,
        "read_s": read_s,
        "join_s": join_s,
        "rss_mib": rss,
        "stats": logs.stats.model_dump(),
        "counts": trace["lifecycle"]["counts"],
    }


def main() -> int:
    if sys.argv[1:2] == ["--log-stage"]:  # run by main() below, in a process of its own
        print(json.dumps(log_stage(Path(sys.argv[2]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=180)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3, help="turns of plain client / cvat-sdk downloads")
    add_arguments(ap)
    args = ap.parse_args()
    session = start("bench_join", args)
    rng = np.random.default_rng(0)

    t = time.perf_counter()
    frames = make_frames(args.frames, args.width, args.height, rng)
    shapes = make_shapes(args.frames, rng)
    print(
        f"generated {args.frames} frames {args.width}x{args.height} JPEG "
        f"({sum(map(len, frames.values())) / 2**20:.1f} MiB) and {len(shapes)} shapes "
        f"in {time.perf_counter() - t:.1f}s"
    )
    job_id = 1
    state = sandbox.CvatState(frames={(job_id, n): data for n, data in frames.items()})
    with sandbox.serve(state) as (base_url, _), tempfile.TemporaryDirectory() as tmp:
        numbers = list(frames)
        conn = connect(ConnectionSettings(base_url, pool_size=args.workers))
        fetch = cvat_frame_fetcher(conn, job_id)

        def sdk_throughput(_: int) -> float:
            t = time.perf_counter()
            with ThreadPoolExecutor(args.workers) as pool:
                assert all(pool.map(fetch, numbers))
            return len(numbers) / (time.perf_counter() - t)

        rates = interleaved(
            {
                "plain client": lambda _: server_throughput(base_url, job_id, numbers, args.workers),
                "cvat-sdk's urllib3 pool": lambda _: pool_throughput(conn, job_id, numbers, args.workers),
                "cvat-sdk": sdk_throughput,
            },
            range(args.rounds),
        )
        raw, pool_only, sdk_only = (float(np.median(r)) for r in rates.values())
        print(
            f"download only, {args.rounds} interleaved rounds (median frames/s): plain client {raw:.0f}, "
            f"cvat-sdk's urllib3 pool {pool_only:.0f}, cvat-sdk {sdk_only:.0f}"
        )
        print(
            ratio_line(
                "download frames/s",
                {"plain client": raw, "cvat-sdk's urllib3 pool": pool_only, "cvat-sdk": sdk_only},
            )
        )
        t = time.perf_counter()
        hashed = frame_fingerprints(
            fetch, numbers, job_id=job_id, chunks_updated_date="bench", workers=args.workers, pixels=False
        )
        dl_image = time.perf_counter() - t
        image_task = len(numbers) / dl_image
        t = time.perf_counter()
        fps = frame_fingerprints(
            fetch,
            numbers,
            job_id=job_id,
            chunks_updated_date="bench",
            cache_dir=Path(tmp),
            workers=args.workers,
        )
        dl = time.perf_counter() - t
        rss_dl = peak_rss_mib()
        assert fps["error"].isna().all(), fps["error"].dropna().head()
        assert hashed["sha256"].equals(fps["sha256"])
        print(
            f"frame throughput, {args.workers} workers: fake server to a plain client {raw:.0f} frames/s; "
            f"through cvat-sdk, download only {sdk_only:.0f} frames/s ({sdk_only / raw:.0%}); validator "
            f"download + sha256 (image task) {image_task:.0f} frames/s ({image_task / raw:.0%}); "
            f"download + sha256 + decode for pixel_sha256 (video task) {len(numbers) / dl:.0f} frames/s "
            f"({len(numbers) / dl / raw:.0%}); peak RSS {rss_dl:.0f} MiB "
            "(holds the in-process server's frames)"
        )
        t = time.perf_counter()
        cached = frame_fingerprints(
            fetch,
            numbers,
            job_id=job_id,
            chunks_updated_date="bench",
            cache_dir=Path(tmp),
            workers=args.workers,
        )
        print(f"second run from the disk cache: {time.perf_counter() - t:.2f}s")
        assert cached.equals(fps)

        records, expected = records_for_job(shapes, fps, rng=rng, when=WHEN, cutoff=CUTOFF)
        log = Path(tmp) / "function.log"
        t = time.perf_counter()
        write_logs(log, records, args.lines, rng)
        print(
            f"wrote {args.lines} log lines ({log.stat().st_size / 2**20:.0f} MiB, "
            f"{len(records)} of this job) "
            f"in {time.perf_counter() - t:.1f}s"
        )
        job = SimpleNamespace(
            frames=pd.DataFrame({"frame": numbers, "deleted": False}),
            shapes=shapes,
            job_id=job_id,
            host=base_url,
        )
        with open(Path(tmp) / "job.pkl", "wb") as fh:
            pickle.dump((job, fps), fh)
        stage = subprocess.run(  # the validator's log stage alone: its peak RSS holds no server frames
            [sys.executable, __file__, "--log-stage", tmp], capture_output=True, text=True, check=True
        )
        got = json.loads(stage.stdout)
        t_read, t_join, s, rss = got["read_s"], got["join_s"], got["stats"], got["rss_mib"]
        print(
            f"log stage in its own process (the validator alone, no fake server): imports "
            f"{got['import_s']:.2f}s, peak RSS {rss['imports']:.0f} MiB after imports, "
            f"{rss['job']:.0f} MiB with the job's shapes and fingerprints"
        )
        print(
            f"read logs {t_read:.1f}s ({args.lines / t_read:,.0f} lines/s; "
            f"{s['inference']} of this job, {s['other_frames']} other frames, "
            f"{s['skipped']} skipped); peak RSS {rss['read']:.0f} MiB"
        )
        print(f"join + lifecycle + calibration {t_join:.2f}s; peak RSS {rss['join']:.0f} MiB")
        print(f"read + join + lifecycle {t_read + t_join:.1f}s (goal <= 4 s at 1M lines / 10k frames)")
        counts = got["counts"]
        exact = all(counts[k] == expected[k] for k in counts)
        print(f"lifecycle {counts}; equals generated: {exact}")
        print(
            f"total validator time (download + read + join): image task {dl_image + t_read + t_join:.1f}s, "
            f"video task {dl + t_read + t_join:.1f}s"
        )
    finish(session)
    return 0 if exact else 1


if __name__ == "__main__":
    raise SystemExit(main())
