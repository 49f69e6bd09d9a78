"""Frame join (keys, re-runs, cutoff), shape-to-detection matching and lifecycle counts on plain frames."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pytest

from ropewatch_validator.trace.join import join_frames, match_frame, match_shapes
from ropewatch_validator.trace.lifecycle import classify, scored, summarize
from ropewatch_validator.trace.logs import read_logs
from support.tracegen import inference_record

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)


def _logs(tmp_path, records) -> object:
    f = tmp_path / "f.log"
    f.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return read_logs([f])


def test_match_frame_hungarian_within_rounding() -> None:
    logged = np.array([[10, 10, 50, 90], [12, 10, 52, 90]], float)
    auto = np.array([[12.004, 10, 52, 90.3], [10, 10, 50, 90]], float)  # order swapped, within 0.5 px
    semi = np.array([[0, 0, 5, 5]], float)
    a, s = match_frame(auto, semi, logged)
    assert sorted(a) == [(0, 1), (1, 0)] and s == []
    a, s = match_frame(auto[:1] + 0.6, auto[:1] + 3, logged)  # 0.6 px off: not the same box; IoU high: edited
    assert a == [] and s == [(0, 1)]


def test_semi_auto_shapes_take_only_detections_no_auto_shape_took() -> None:
    """Worked by hand: the auto shape takes detection 0; semi-auto shape 0 overlaps only detection 0
    (taken) and stays unmatched; shape 1 overlaps detection 2 with IoU 9*10 / (11*10) = 0.82."""
    logged = np.array([[0, 0, 10, 10], [100, 0, 110, 10], [200, 0, 210, 10]], float)
    auto = np.array([[0, 0, 10, 10]], float)
    semi = np.array([[1, 0, 11, 10], [201, 0, 211, 10]], float)
    assert match_frame(auto, semi, logged) == ([(0, 0)], [(1, 2)])
    assert match_frame(auto[:0], semi, logged) == ([], [(0, 0), (1, 2)])  # nothing taken: both match


# The job's vocabulary may differ from the function's (wrong/correct): --values maps it, unsafe first.
@pytest.mark.parametrize("values", [("wrong", "correct"), ("unsafe", "safe")])
def test_join_and_lifecycle_every_state(tmp_path, values) -> None:
    frames = pd.DataFrame(
        {
            "frame": [0, 1, 2, 3],
            "sha256": ["a", "b-reencoded", "c", "d"],
            "pixel_sha256": ["pa", "pb", "pc", "pd"],
        }
    )
    box = [[10.0, 10.0, 50.0, 90.0], [100.0, 10.0, 150.0, 90.0], [200.0, 10.0, 250.0, 90.0]]
    recs = [
        # frame 0: three runs; the one at T0+1h is the latest before the cutoff
        inference_record(
            sha256="a",
            pixel_sha256="pa",
            width=320,
            height=240,
            boxes=box[:1],
            logits=[3.0],
            timestamp=T0,
            request_id="old",
        ),
        inference_record(
            sha256="a",
            pixel_sha256="pa",
            width=320,
            height=240,
            boxes=box,
            logits=[2.0, 1.5, -1.0],
            timestamp=T0 + timedelta(hours=1),
            request_id="chosen",
        ),
        inference_record(
            sha256="a",
            pixel_sha256="pa",
            width=320,
            height=240,
            boxes=box[:2],
            logits=[2.0, 2.0],
            timestamp=T0 + timedelta(hours=5),
            request_id="late",
        ),
        # frame 1: bytes differ, pixels agree
        inference_record(
            sha256="b-original",
            pixel_sha256="pb",
            width=320,
            height=240,
            boxes=box[:1],
            logits=[-2.0],
            timestamp=T0,
            request_id="pix",
        ),
        # frame 3: only after the cutoff
        inference_record(
            sha256="d",
            pixel_sha256="pd",
            width=320,
            height=240,
            boxes=box[:1],
            logits=[0.2],
            timestamp=T0 + timedelta(hours=6),
            request_id="after",
        ),
    ]
    logs = _logs(tmp_path, recs)
    cutoff = pd.Timestamp(T0 + timedelta(hours=2))
    fj = join_frames(frames, logs.requests, cutoff)
    chosen = dict(zip(fj.frames["frame"], fj.frames["request_id"]))
    assert chosen[0] == "chosen" and chosen[1] == "pix" and pd.isna(chosen[2]) and chosen[3] == "after"
    st = fj.stats
    assert (st["joined"], st["by_sha256"], st["by_pixel_sha256"], st["unjoined"]) == (3, 2, 1, 1)
    assert st["unjoined_frames"] == [2] and st["reruns"] == 1 and st["after_cutoff"] == 1

    shapes = pd.DataFrame(
        [
            # frame 0: accepted (logged correct), corrected (logged correct -> wrong), geometry edited,
            # manual added
            dict(
                shape_id=1,
                frame=0,
                source="auto",
                x1=10.0,
                y1=10.0,
                x2=50.0,
                y2=90.0,
                safety_rope_use="correct",
            ),
            dict(
                shape_id=2,
                frame=0,
                source="auto",
                x1=100.0,
                y1=10.0,
                x2=150.0,
                y2=90.0,
                safety_rope_use="wrong",
            ),
            dict(
                shape_id=3,
                frame=0,
                source="semi-auto",
                x1=203.0,
                y1=12.0,
                x2=251.0,
                y2=95.0,
                safety_rope_use="wrong",
            ),
            dict(
                shape_id=4, frame=0, source="manual", x1=5.0, y1=5.0, x2=9.0, y2=9.0, safety_rope_use="wrong"
            ),
            # frame 1 (joined by pixels): its only detection was deleted; frame 2: not joined
            dict(shape_id=5, frame=2, source="auto", x1=1.0, y1=1.0, x2=9.0, y2=9.0, safety_rope_use="wrong"),
            # frame 3: accepted
            dict(
                shape_id=6,
                frame=3,
                source="auto",
                x1=10.0,
                y1=10.0,
                x2=50.0,
                y2=90.0,
                safety_rope_use="correct",
            ),
        ]
    )
    shapes["safety_rope_use"] = shapes["safety_rope_use"].map({"wrong": values[0], "correct": values[1]})
    rows = match_shapes(shapes, logs.detections, fj.frames, values=values)
    rows["state"] = classify(rows)
    state = dict(zip(rows["shape_id"].fillna(-1).astype(int), rows["state"]))
    assert state == {
        1: "accepted",
        2: "attribute_corrected",
        3: "geometry_edited",
        4: "added",
        5: "unjoined_auto",
        6: "accepted",
        -1: "deleted",
    }
    summary = summarize(rows, values=values).model_dump()
    assert summary["counts"] == {
        "accepted": 2,
        "attribute_corrected": 1,
        "geometry_edited": 1,
        "deleted": 1,
        "added": 1,
        "unjoined_auto": 1,
        "unjoined_semi_auto": 0,
        "attribute_unmapped": 0,
    }
    assert summary["work_saved_share"] == pytest.approx(2 / 5)
    # original predictions: shape1 correct->correct, shape2 logged correct / final wrong, shape3 logged wrong
    # / final wrong, shape6 logged correct (0.2 >= 0) / final correct
    assert summary["original_confusion"]["matrix"] == [[1, 1], [0, 2]]
    assert summary["original_confusion"]["labels"] == list(values)
    assert summary["unjoined_shapes"] == [{"frame": 2, "shape_id": 5, "source": "auto"}]
    by_id = rows.set_index(rows["shape_id"].fillna(-1).astype(int))
    assert by_id.loc[2, "request_id"] == "chosen" and by_id.loc[2, "logit"] == 1.5
    assert by_id.loc[-1, "request_id"] == "pix" and by_id.loc[-1, "frame"] == 1
    s = scored(rows, values=values)
    assert sorted(s["logit"].tolist()) == [-1.0, 0.2, 1.5, 2.0] and s["y"].sum() == 2
