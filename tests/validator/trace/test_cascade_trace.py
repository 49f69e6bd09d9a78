"""The validator's per-stage report of the cascade: records with ``stage``/``p_filter``/``shadow`` read by
trace.logs, and trace.stages figures worked out by hand."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ropewatch_validator.trace.logs import read_logs
from ropewatch_validator.trace.stages import stage_summary


def record(rid: str, dets: list[dict]) -> str:
    return json.dumps(
        {
            "timestamp": "2026-11-23T10:00:00.000000Z",
            "level": "info",
            "event": "inference",
            "request_id": rid,
            "model_version": "v1",
            "thr": 0.5,
            "temperature": 1.0,
            "image": {"sha256": rid * 8, "pixel_sha256": None, "width": 100, "height": 100},
            "detections": [
                {"box": [0, 0, 10, 10], "label": "person", "logit": 0.0, "detector_score": None, **d}
                for d in dets
            ],
        }
    )


def det(value: str, stage: str, p_filter: float | None, shadow: str | None = None) -> dict:
    return {
        "safety_rope_use": value,
        "p_correct": 0.5,
        "stage": stage,
        "p_filter": p_filter,
        "shadow": None if shadow is None else {"value": shadow, "p_correct": 0.5, "logit": 0.0},
    }


def test_logs_reader_keeps_stage_filter_p_and_shadow(tmp_path):
    path = tmp_path / "f.log"
    old = record("r0", [{"safety_rope_use": "wrong", "p_correct": 0.1}])  # no cascade fields
    path.write_text(old + "\n" + record("r1", [det("correct", "filter", 0.97, "wrong")]) + "\n")
    logs = read_logs([path])
    d = logs.detections
    assert logs.stats.malformed == 0
    assert d["stage"].tolist() == ["expert", "filter"]  # a record from before the cascade: the expert
    assert np.isnan(d["p_filter"][0]) and d["p_filter"][1] == 0.97
    assert d["shadow_value"].isna().tolist() == [True, False] and d["shadow_value"][1] == "wrong"


def test_stage_summary_by_hand():
    # request r1: two filter-decided persons (one shadowed); r2: one filter, one expert; r3: expert only
    detections = pd.DataFrame(
        {
            "request_id": ["r1", "r1", "r2", "r2", "r3"],
            "safety_rope_use": ["correct", "wrong", "correct", "wrong", "correct"],
            "stage": ["filter", "filter", "filter", "expert", "expert"],
            "p_filter": [0.97, 0.02, 0.95, 0.5, 0.6],
            "shadow_value": ["correct", None, "wrong", None, None],
        }
    )
    # joined objects: final values after review; r1's second person was corrected to correct
    rows = pd.DataFrame(
        {
            "state": [
                "accepted",
                "attribute_corrected",
                "accepted",
                "accepted",
                "attribute_corrected",
                "missed",
            ],
            "safety_rope_use": ["correct", "correct", "correct", "wrong", "wrong", "wrong"],
            "logged_value": ["correct", "wrong", "correct", "wrong", "correct", None],
            "stage": ["filter", "filter", "filter", "expert", "expert", np.nan],
            "shadow_value": ["correct", None, "wrong", None, None, None],
        }
    )
    stages = stage_summary(rows, detections, "safety_rope_use")
    assert stages is not None
    s = stages.model_dump()
    # filter: 3 objects, kept 2 (the corrected one not) → 2/3; expert: 2 objects, kept 1 → 1/2
    assert s["stages"]["filter"] == {"n": 3, "kept": 2, "accuracy": pytest.approx(2 / 3)}
    assert s["stages"]["expert"] == {"n": 2, "kept": 1, "accuracy": 0.5}
    # r1 made no expert pass; r2 and r3 did → 1/3 skip; 3 of 5 persons by the filter
    assert (s["requests"], s["requests_skipping_expert"]) == (3, 1)
    assert s["frame_skip_share"] == pytest.approx(1 / 3) and s["persons_by_filter_share"] == 0.6
    # shadow: 2 persons; expert agreed with the filter on 1; against the final value: expert 1/2, filter 2/2
    assert s["shadow"] == {
        "n": 2,
        "agreement_with_filter": 0.5,
        "n_with_final": 2,
        "expert_accuracy": 0.5,
        "filter_accuracy": 1.0,
    }


def test_no_filter_no_block():
    detections = pd.DataFrame({"request_id": ["r"], "stage": ["expert"], "p_filter": [np.nan]})
    assert stage_summary(pd.DataFrame({"state": []}), detections, "safety_rope_use") is None
