"""The whole trace section on a generated job whose log records are known (no HTTP: fingerprints given)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ropewatch_validator.trace.logs import read_logs
from ropewatch_validator.trace.section import trace_section
from support.tracegen import records_for_job

WHEN = datetime(2026, 11, 23, 9, 0, tzinfo=timezone.utc)
CUTOFF = WHEN + timedelta(hours=3)


def _job(rng: np.random.Generator, n_frames: int = 60) -> SimpleNamespace:
    rows, sid = [], 0
    for f in range(n_frames):
        for k in range(int(rng.integers(0, 5))):
            x = 60.0 * k + 5
            sid += 1
            rows.append(
                dict(
                    shape_id=sid,
                    frame=f,
                    label="person",
                    type="rectangle",
                    source=rng.choice(["auto", "auto", "auto", "semi-auto", "manual"]),
                    x1=x,
                    y1=20.0,
                    x2=x + 40.0,
                    y2=200.0,
                    safety_rope_use=rng.choice(["wrong", "correct"]),
                )
            )
    rows.append(
        dict(
            shape_id=sid + 1,
            frame=0,
            label="car",
            type="rectangle",
            source="auto",
            x1=0.0,
            y1=0.0,
            x2=5.0,
            y2=5.0,
            safety_rope_use=None,
        )
    )  # another label: ignored
    frames = pd.DataFrame({"frame": range(n_frames), "deleted": [f == n_frames - 1 for f in range(n_frames)]})
    return SimpleNamespace(frames=frames, shapes=pd.DataFrame(rows), job_id=5, host="http://fake")


def test_trace_section_counts_every_state_exactly(tmp_path) -> None:
    rng = np.random.default_rng(1)
    job = _job(rng)
    live = job.frames.loc[~job.frames["deleted"], "frame"]
    fps = pd.DataFrame(
        {
            "frame": live,
            "sha256": [hashlib.sha256(b"b%d" % f).hexdigest() for f in live],
            "pixel_sha256": [hashlib.sha256(b"p%d" % f).hexdigest() for f in live],
            "width": 320,
            "height": 240,
            "error": None,
        }
    )
    persons = job.shapes[(job.shapes["label"] == "person") & job.shapes["frame"].isin(live)]
    records, expected = records_for_job(
        persons, fps, rng=rng, when=WHEN, cutoff=CUTOFF, unlogged_frames=[3, 4]
    )
    log = tmp_path / "docker.log"
    log.write_text("starting processor\n" + "\n".join(json.dumps(r) for r in records) + "\n")
    fps.loc[fps["frame"] == 7, ["sha256", "pixel_sha256", "error"]] = [None, None, "HTTPError: 500"]
    failed_frame = persons[persons["frame"] == 7]
    if len(failed_frame):  # shapes of a frame that failed to download cannot join either
        for src, key in (("auto", "unjoined_auto"), ("semi-auto", "unjoined_semi_auto")):
            n = int((failed_frame["source"] == src).sum())
            expected[key] += n
    trace = trace_section(job, read_logs([log]), fps, cutoff=pd.Timestamp(CUTOFF)).model_dump()
    json.dumps(trace, allow_nan=False)  # strict JSON

    counts = trace["lifecycle"]["counts"]
    # frame 7's logged detections join nowhere, so its accepted/corrected/edited/deleted move away
    rec7 = next(r for r in records if r["request_id"] == "frame-7")
    assert counts["unjoined_auto"] == expected["unjoined_auto"]
    assert counts["unjoined_semi_auto"] == expected["unjoined_semi_auto"]
    assert counts["added"] == expected["added"]
    assert counts["accepted"] + counts["attribute_corrected"] + counts["geometry_edited"] + counts[
        "deleted"
    ] == sum(expected[k] for k in ("accepted", "attribute_corrected", "geometry_edited", "deleted")) - len(
        rec7["detections"]
    )
    assert all(counts[k] > 0 for k in counts if k != "attribute_unmapped"), counts
    assert counts["attribute_unmapped"] == 0 and trace["lifecycle"]["attribute_mapping"] == "ok"
    assert (
        trace["frames"]["unjoined_frames"] == [3, 4] and trace["frames"]["download_failed"][0]["frame"] == 7
    )
    assert trace["frames"]["by_pixel_sha256"] > 0 and trace["frames"]["reruns"] > 0
    assert trace["logs"]["skipped"] == 1

    # recovered scores equal the logged ones, object by object
    objs = pd.DataFrame(trace["objects"])
    joined = objs[objs["request_id"].notna()]
    assert joined["request_id"].str.fullmatch(r"frame-\d+").all()  # never a re-run
    for o in joined.itertuples():
        rec = next(r for r in records if r["request_id"] == o.request_id)
        det = rec["detections"][int(o.det_index)]
        assert (
            o.logit == det["logit"]
            and o.p_correct == det["p_correct"]
            and o.logged_value == det["safety_rope_use"]
        )

    # ranking metrics on the recovered scores agree with sklearn
    s = trace["scores"]
    cal = trace["calibration"]
    assert cal["roc_auc"] == pytest.approx(roc_auc_score(s["y"], s["logit"]))
    assert cal["pr"]["correct"]["ap"] == pytest.approx(average_precision_score(s["y"], s["p_correct"]))
    cm = np.array(trace["lifecycle"]["original_confusion"]["matrix"])
    assert cm[0, 1] + cm[1, 0] == counts["attribute_corrected"]  # only corrections disagree with the log
