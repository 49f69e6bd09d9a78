"""`ropewatch dataset build` against the sandbox CVAT over real HTTP (cvat-sdk client, real frames)."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from ropewatch_validator.cli.main import main as ropewatch
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic

TASKS = {101: 11, 102: 12, 103: 13, 104: 14}  # job -> task


def noise_png(seed: int) -> bytes:
    """A 320x240 frame of random pixels: any misplaced crop shows."""
    out = io.BytesIO()
    rgb = np.random.default_rng(seed).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def cvat():
    state = sandbox.CvatState()
    for seed, (job, task) in enumerate(TASKS.items()):
        gen = synthetic.generate(3, job_id=job, task_id=task, width=320, height=240, seed=seed, extras=False)
        gen.frames_bytes = {n: noise_png(100 * job + n) for n in range(3)}
        state.add(gen)
    with sandbox.serve(state) as (url, st):
        yield url, st


def manifest(path):
    return list(csv.DictReader(path.open()))


def test_crops_are_the_expected_pixel_boxes_and_split_is_by_task(cvat, tmp_path, capsys):
    url, state = cvat
    out = tmp_path / "ds"
    args = ["dataset", "build", *map(str, TASKS), "--server-host", url, "--output-dir", str(out)]
    assert ropewatch([*args, "--val-share", "0.25", "--frame-cache", str(tmp_path / "cache")]) == 0
    train, val = manifest(out / "train_manifest.csv"), manifest(out / "val_manifest.csv")
    # split by task: four tasks, 25% → one task in val, three in train, none in both
    train_tasks, val_tasks = {r["task"] for r in train}, {r["task"] for r in val}
    assert len(val_tasks) == 1 and len(train_tasks) == 3 and not train_tasks & val_tasks
    info = json.loads((out / "dataset.json").read_text())
    assert info["expand"] == {"x": 1.0, "y_top": 0.2, "y_bot": 1.5}
    # every manual person of every job with a value, exactly once (from the API bodies themselves)
    expected = {}
    for job in TASKS:
        for s in state.annotations[job]["shapes"]:
            if s["source"] == "manual" and s["type"] == "rectangle":
                expected[(job, s["id"])] = (s["frame"], s["points"], s["attributes"][0]["value"])
    rows = train + val
    assert sorted((int(r["job"]), int(r["shape_id"])) for r in rows) == sorted(expected)
    for r in rows:
        frame, (x1, y1, x2, y2), value = expected[(int(r["job"]), int(r["shape_id"]))]
        assert int(r["frame"]) == frame and r["y"] == str(int(value == "correct"))
        # expand x=1.0 → w/2 each side; y_top 0.2·h above; y_bot 1.5·h below; floor/ceil; clip to 320x240
        w, h = x2 - x1, y2 - y1
        box = [
            max(0, math.floor(x1 - w / 2)),
            max(0, math.floor(y1 - 0.2 * h)),
            min(320, math.ceil(x2 + w / 2)),
            min(240, math.ceil(y2 + 1.5 * h)),
        ]
        assert [int(r[k]) for k in ("cx1", "cy1", "cx2", "cy2")] == box
        frame_rgb = np.asarray(Image.open(io.BytesIO((out / r["frame_file"]).read_bytes())).convert("RGB"))
        crop = np.asarray(Image.open(out / r["crop"]))
        assert np.array_equal(crop, frame_rgb[box[1] : box[3], box[0] : box[2]])
    assert "train crops" in capsys.readouterr().out


def test_rerun_downloads_nothing_and_gives_the_same_manifests(cvat, tmp_path):
    url, state = cvat
    out = tmp_path / "ds"
    args = [
        "dataset",
        "build",
        "--task",
        "11",
        "--task",
        "12",
        "--server-host",
        url,
        "--output-dir",
        str(out),
    ]
    assert ropewatch(args) == 0
    first = (out / "train_manifest.csv").read_text(), (out / "val_manifest.csv").read_text()
    assert any("type=frame" in p or "/data?" in p for p in state.requests)
    state.requests.clear()
    assert ropewatch(args) == 0
    assert not [p for p in state.requests if "/data?" in p]  # frames and crops reused from disk
    assert ((out / "train_manifest.csv").read_text(), (out / "val_manifest.csv").read_text()) == first


def test_one_task_cannot_be_split(cvat, tmp_path, capsys):
    url, _ = cvat
    assert (
        ropewatch(["dataset", "build", "101", "--server-host", url, "--output-dir", str(tmp_path / "d")]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs at least two" in err


def manual_valued(state, job):
    return [
        s
        for s in state.annotations[job]["shapes"]
        if s["source"] == "manual" and s["type"] == "rectangle" and s["attributes"][0]["value"]
    ]


def test_boxes_that_cannot_be_cut_are_skipped_and_counted_by_reason(cvat, tmp_path, capsys):
    url, state = cvat
    far, empty = manual_valued(state, 101)[:2]
    far["points"] = [5000.0, 5000.0, 5100.0, 5100.0]  # in a 320x240 frame
    empty["points"] = [50.0, 60.0, 50.0, 90.0]  # zero width
    small = io.BytesIO()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(small, format="PNG")
    state.frames[(102, 1)] = small.getvalue()  # served at 64x48 while the meta says 320x240
    on_small = [s for s in manual_valued(state, 102) if s["frame"] == 1]
    assert on_small
    out = tmp_path / "ds"
    assert (
        ropewatch(["dataset", "build", *map(str, TASKS), "--server-host", url, "--output-dir", str(out)]) == 0
    )
    skipped = json.loads((out / "dataset.json").read_text())["skipped"]
    assert skipped["box_outside_frame"] == 1 and skipped["box_empty"] == 1
    assert skipped["frame_size_mismatch"] == len(on_small)
    rows = manifest(out / "train_manifest.csv") + manifest(out / "val_manifest.csv")
    kept = {(int(r["job"]), int(r["shape_id"])) for r in rows}
    gone = {(101, far["id"]), (101, empty["id"])} | {(102, s["id"]) for s in on_small}
    assert not kept & gone
    every = {(job, s["id"]) for job in TASKS for s in manual_valued(state, job)}
    assert kept == every - gone  # the others are all there
    printed = capsys.readouterr().out
    assert "'box_outside_frame': 1" in printed and f"'frame_size_mismatch': {len(on_small)}" in printed


def test_a_rebuild_with_another_crop_rule_cuts_new_crops(cvat, tmp_path, tiny_filter_dict):
    from ropewatch_core.model.checkpoint import save_checkpoint

    url, _ = cvat
    out = tmp_path / "ds"
    args = ["dataset", "build", *map(str, TASKS), "--server-host", url, "--output-dir", str(out)]
    assert ropewatch(args) == 0
    narrow = tmp_path / "narrow.pt"
    save_checkpoint({**tiny_filter_dict, "expand": {"x": 0.1, "y_top": 0.05, "y_bot": 0.3}}, narrow)
    assert ropewatch([*args, "--filter", str(narrow)]) == 0
    assert json.loads((out / "dataset.json").read_text())["expand"] == {"x": 0.1, "y_top": 0.05, "y_bot": 0.3}
    rows = manifest(out / "train_manifest.csv") + manifest(out / "val_manifest.csv")
    assert rows
    for r in rows:  # every crop is the frame's pixels in the row's (new) crop box
        x1, y1, x2, y2 = (float(r[k]) for k in ("x1", "y1", "x2", "y2"))
        w, h = x2 - x1, y2 - y1
        box = [
            max(0, math.floor(x1 - 0.1 * w / 2)),
            max(0, math.floor(y1 - 0.05 * h)),
            min(320, math.ceil(x2 + 0.1 * w / 2)),
            min(240, math.ceil(y2 + 0.3 * h)),
        ]
        assert [int(r[k]) for k in ("cx1", "cy1", "cx2", "cy2")] == box
        frame_rgb = np.asarray(Image.open(io.BytesIO((out / r["frame_file"]).read_bytes())).convert("RGB"))
        crop = np.asarray(Image.open(out / r["crop"]))
        assert np.array_equal(crop, frame_rgb[box[1] : box[3], box[0] : box[2]])
