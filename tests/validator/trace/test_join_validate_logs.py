"""`validate-job JOB --logs` end to end: sandbox CVAT serving known JPEG frames, logs written for them."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ropewatch_validator.cli.main import main
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic
from ropewatch_validator.trace.section import TOP_MISTAKES
from support.tracegen import noise_lines, records_for_job

JOB, N_FRAMES, DELETED, UNLOGGED = 101, 14, 13, 6
WIDTH, HEIGHT = 320, 240
CUTOFF = datetime.fromisoformat(synthetic.UPDATED.replace("Z", "+00:00"))  # the job's updated_date
WHEN = CUTOFF - timedelta(hours=2)


def _jpeg(seed: int) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _person_rectangles(job: synthetic.SyntheticJob) -> pd.DataFrame:
    """The generated job's person boxes straight from its API bodies (not through cvat.fetch)."""
    person = next(label["id"] for label in job.labels if label["name"] == "person")
    rows = [
        {
            "shape_id": s["id"],
            "frame": s["frame"],
            "source": s["source"],
            "x1": s["points"][0],
            "y1": s["points"][1],
            "x2": s["points"][2],
            "y2": s["points"][3],
            "safety_rope_use": s["attributes"][0]["value"],
        }
        for s in job.annotations["shapes"]
        if s["type"] == "rectangle" and s["label_id"] == person and s["frame"] != DELETED
    ]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def traced_job():
    """A job whose frames' bytes are known, and function log lines written for exactly those bytes."""
    rng = np.random.default_rng(7)
    job = synthetic.generate(
        N_FRAMES,
        job_id=JOB,
        width=WIDTH,
        height=HEIGHT,
        seed=3,
        extras=False,
        p_semi=0.25,
        deleted=(DELETED,),
    )
    job.job["data_original_chunk_type"] = "video"  # re-encoded frames below: bytes may change, pixels may not
    job.frames_bytes = {n: _jpeg(n) for n in range(N_FRAMES)}
    live = [n for n in range(N_FRAMES) if n != DELETED]
    oracle = pd.DataFrame(
        {
            "frame": live,
            "sha256": [hashlib.sha256(job.frames_bytes[n]).hexdigest() for n in live],
            "pixel_sha256": [
                hashlib.sha256(
                    np.asarray(Image.open(io.BytesIO(job.frames_bytes[n])).convert("RGB")).tobytes()
                ).hexdigest()
                for n in live
            ],
            "width": WIDTH,
            "height": HEIGHT,
        }
    )
    records, expected = records_for_job(
        _person_rectangles(job),
        oracle,
        rng=rng,
        when=WHEN,
        cutoff=CUTOFF,
        corrected_share=0.3,
        deleted_share=0.5,
        reencoded_share=0.2,
        rerun_share=0.3,
        unlogged_frames=[UNLOGGED],
        model_version="rope-2026.11",
    )
    noise = noise_lines(rng, 6, WHEN)  # 2 Nuclio lines with a JSON tail but no "event", 2 failures, 2 plain
    lines = ["docker: starting container", *noise[:3], *(json.dumps(r) for r in records), *noise[3:]]
    return job, records, expected, "\n".join(lines) + "\n"


@pytest.fixture
def cvat(traced_job, monkeypatch):
    monkeypatch.delenv("CVAT_ACCESS_TOKEN", raising=False)
    state = sandbox.CvatState()
    state.add(traced_job[0])
    with sandbox.serve(state) as (url, st):
        yield url, st


def _validate(url: str, tmp_path, logs: str, *extra: str) -> dict:
    code = main(
        [
            "validate-job",
            str(JOB),
            "--server-host",
            url,
            "--out",
            str(tmp_path / "out"),
            "--db",
            str(tmp_path / "h.sqlite"),
            "--frame-cache",
            str(tmp_path / "cache"),
            "--frame-workers",
            "3",
            "--quiet",
            "--logs",
            logs,
            *extra,
        ]
    )
    assert code == 0
    return json.loads((tmp_path / "out" / f"job-{JOB}" / "report.json").read_text())


def _check_trace(report: dict, records: list[dict], expected: dict) -> None:
    trace = report["trace"]
    counts = trace["lifecycle"]["counts"]
    assert counts == {k: expected[k] for k in counts}
    for state in ("accepted", "attribute_corrected", "geometry_edited", "deleted", "added"):
        assert counts[state] > 0, counts
    frames = trace["frames"]
    assert frames["frames"] == N_FRAMES - 1 and frames["unjoined_frames"] == [UNLOGGED]
    assert (
        frames["by_pixel_sha256"] == expected["by_pixel_sha256"] > 0 and frames["pixel_fingerprint"] is True
    )
    assert frames["reruns"] == expected["reruns"] > 0 and frames["download_failed"] == []
    assert trace["logs"]["skipped"] == 5 and trace["logs"]["failed"] == 2  # 1 docker line + 4 noise lines
    assert trace["logs"]["inference"] == len(records)
    assert report["model_version"] == "rope-2026.11" and trace["model_versions"] == ["rope-2026.11"]

    by_id = {r["request_id"]: r for r in records}
    joined = [o for o in trace["objects"] if o["request_id"] is not None]
    assert len(joined) == sum(
        counts[k] for k in ("accepted", "attribute_corrected", "geometry_edited", "deleted")
    )
    for o in joined:
        det = by_id[o["request_id"]]["detections"][o["det_index"]]
        assert o["request_id"] == f"frame-{o['frame']}"  # the run before the cutoff, never a re-run
        assert o["logit"] == expected["scores"][(o["frame"], tuple(det["box"]))] == det["logit"]
        assert o["p_correct"] == det["p_correct"] and o["logged_value"] == det["safety_rope_use"]
        assert o["detector_score"] == det["detector_score"] and o["thr"] == 0.5


def _oracle_mistakes(job: synthetic.SyntheticJob, records: list[dict]) -> list[tuple[float, int, int]]:
    """(confidence, frame, shape id) of every auto shape whose value differs from its logged detection,
    found from the generated bodies and the records alone."""
    by_frame = {r["request_id"]: r for r in records}
    out = []
    for s in _person_rectangles(job).itertuples(index=False):
        rec = by_frame.get(f"frame-{s.frame}")
        if s.source != "auto" or rec is None:
            continue
        det = next(
            d
            for d in rec["detections"]
            if max(abs(a - b) for a, b in zip(d["box"], (s.x1, s.y1, s.x2, s.y2))) <= 0.5
        )
        if det["safety_rope_use"] != s.safety_rope_use:
            p = det["p_correct"]
            out.append((p if det["safety_rope_use"] == "correct" else 1 - p, s.frame, s.shape_id))
    return sorted(out, key=lambda m: (-m[0], m[1]))


def test_validate_job_with_log_file(cvat, traced_job, tmp_path) -> None:
    url, state = cvat
    job, records, expected, text = traced_job
    log = tmp_path / "docker.log"
    log.write_text(text)
    report = _validate(url, tmp_path, str(log))
    _check_trace(report, records, expected)

    # the most confident mistakes: exactly the oracle's top k, each with a crop of its frame
    mistakes = report["trace"]["mistakes"]
    oracle = _oracle_mistakes(job, records)
    assert len(oracle) > TOP_MISTAKES  # the panel really is a top-k
    assert [(m["frame"], m["shape_id"]) for m in mistakes] == [
        (f, sid) for _, f, sid in oracle[:TOP_MISTAKES]
    ]
    assert [m["confidence"] for m in mistakes] == pytest.approx([c for c, _, _ in oracle[:TOP_MISTAKES]])
    for m in mistakes:
        assert m["final_value"] != m["logged_value"] and m["crop_error"] is None and m["thr"] == 0.5
        crop = Image.open(io.BytesIO(base64.b64decode(m["crop"])))
        assert crop.format == "PNG" and max(crop.size) <= 160

    # frames: every live one once for its fingerprint, then only the frames of the mistakes' crops and
    # report.html's worst-frame thumbnails again, each once (one cached fetcher serves both)
    frame_requests = [p for p in state.requests if f"/api/jobs/{JOB}/data?" in p]
    pictured = {m["frame"] for m in mistakes} | {w["frame"] for w in report["worst_frames"]}
    assert len(frame_requests) == N_FRAMES - 1 + len(pictured)
    assert all("type=frame" in p and "quality=original" in p for p in frame_requests)
    assert f"number={DELETED}&" not in "".join(
        p + "&" for p in frame_requests
    )  # deleted frames are not fetched

    # a rerun reads fingerprints and crop frames from the disk cache: no frame is downloaded again
    state.requests.clear()
    rerun = _validate(url, tmp_path, str(log))
    assert [p for p in state.requests if f"/api/jobs/{JOB}/data?" in p] == []
    assert rerun["trace"]["mistakes"] == mistakes

    page = (tmp_path / "out" / f"job-{JOB}" / "report.html").read_text()
    assert "Most confident mistakes" in page and "reliability diagram" in page
    # worst frames: a traced prediction's box is named by its error and the logged P(correct)
    logged = {(o["frame"], o["shape_id"]): o["p_correct"] for o in report["trace"]["objects"]}
    named = [
        f"{o['error']} · P(correct) {logged[(w['frame'], o['shape_id'])]:.2f}"
        for w in report["worst_frames"]
        for o in w["objects"]
        if o["role"] == "prediction" and logged.get((w["frame"], o["shape_id"])) is not None
    ]
    assert named and all(n in page for n in named)
    assert "precision/recall of correct and wrong" in page
    assert page.count('alt="crop of frame') == len(mistakes)
    for m in mistakes:
        assert f'src="data:image/png;base64,{m["crop"]}"' in page
        assert (
            f"truth {m['final_value']} · predicted {m['logged_value']} · P(correct) {m['p_correct']:.3f}"
            in page
        )


def test_validate_job_reads_logs_from_stdin(cvat, traced_job, tmp_path, monkeypatch) -> None:
    url, _ = cvat
    _, records, expected, text = traced_job
    monkeypatch.setattr("sys.stdin", io.StringIO(text))
    _check_trace(_validate(url, tmp_path, "-"), records, expected)


def test_image_task_joins_by_bytes_without_decoding(cvat, traced_job, tmp_path) -> None:
    """On an image task the frames are hashed, not decoded: the simulated re-encoded frames stay
    unjoined (and listed) until ``--pixel-fingerprint always`` asks for the decode."""
    url, state = cvat
    _, records, expected, text = traced_job
    state.jobs[JOB] = {**state.jobs[JOB], "data_original_chunk_type": "imageset"}
    log = tmp_path / "fn.log"
    log.write_text(text)
    frames = _validate(url, tmp_path, str(log))["trace"]["frames"]
    assert frames["pixel_fingerprint"] is False and frames["by_pixel_sha256"] == 0
    assert frames["unjoined"] == expected["by_pixel_sha256"] + 1 and UNLOGGED in frames["unjoined_frames"]
    again = _validate(url, tmp_path, str(log), "--pixel-fingerprint", "always")
    _check_trace(again, records, expected)


@pytest.fixture
def imageset_job(traced_job):
    """The traced job as an image task (original chunks are the files: no pixel hash by default), with
    records as cvat-sdk's driver makes them: every frame hashed after a re-encode that the record names."""
    import copy

    job, records, expected, _ = traced_job
    job = copy.deepcopy(job)
    job.job["data_original_chunk_type"] = "imageset"
    reencoded = []
    for rec in copy.deepcopy(records):
        rec["image"]["sha256"] = hashlib.sha256(b"png:" + rec["image"]["sha256"].encode()).hexdigest()
        reencoded.append(rec)
    state = sandbox.CvatState()
    state.add(job)
    with sandbox.serve(state) as (url, _):
        yield url, reencoded, expected


def test_cvat_sdk_records_join_by_pixels_by_themselves(imageset_job, tmp_path, capsys) -> None:
    """cvat-sdk's driver hands the function pixels: records that say so (image.source_bytes false) join
    by the pixel hash with the default --pixel-fingerprint auto, even on an image task."""
    url, records, expected = imageset_job
    for rec in records:
        rec["image"]["source_bytes"] = False
    log = tmp_path / "cvat-cli.log"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    frames = _validate(url, tmp_path, str(log))["trace"]["frames"]
    assert frames["pixel_fingerprint"] is True
    assert frames["joined"] == frames["by_pixel_sha256"] == N_FRAMES - 2  # all but deleted and unlogged
    assert frames["by_sha256"] == 0 and frames["unjoined_frames"] == [UNLOGGED]


def test_records_that_join_nothing_say_so(imageset_job, tmp_path, capsys) -> None:
    """Records without the flag whose byte hash matches no frame: 0 joined, and a loud warning on stderr
    and in report.json, not a quiet exit 0."""
    url, records, _ = imageset_job
    log = tmp_path / "old.log"
    log.write_text("".join(json.dumps(r) + "\n" for r in records))
    report = _validate(url, tmp_path, str(log))
    assert report["trace"]["frames"]["joined"] == 0
    (warning,) = [w for w in report["warnings"] if "none joins a frame" in w]
    assert f"{len(records)} inference records read" in warning
    assert warning in capsys.readouterr().err
