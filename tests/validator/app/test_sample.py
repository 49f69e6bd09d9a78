"""The design of ``review sample``: strata from traced persons, the drawn sizes, and the refusal of a
design that would leave a stratum's frames with inclusion probability 0."""

from __future__ import annotations

import pytest

from ropewatch_core.errors import InputError
from ropewatch_validator.app.sample import Design, draw, strata_of
from ropewatch_validator.render.model import Trace
from support.reports import TRACE_FRAMES, TRACE_SETTINGS


def _traced(make_report, objects):
    trace = Trace.model_validate(
        {
            "logs": {}, "frames": TRACE_FRAMES, "settings": TRACE_SETTINGS, "model_versions": [],
            "calibration": None,
            "lifecycle": {"counts": {}, "final_objects": 0, "work_saved_share": None, "unjoined_shapes": [],
                          "original_confusion": {"labels": [], "rows": "", "columns": "", "matrix": [],
                                                 "unusable_values": 0}},
            "scores": {"logit": [], "p_correct": [], "y": []},
            "objects": [{"state": "accepted", **o} for o in objects],
        }
    )  # fmt: skip
    return make_report().model_copy(update={"trace": trace})


def test_strata_from_traced_persons(make_report):
    report = _traced(
        make_report,
        [
            {"frame": 0, "p_correct": 0.55, "thr": 0.5, "stage": "expert"},  # within 0.1: uncertain
            {"frame": 0, "p_correct": 0.99, "thr": 0.5, "stage": "filter"},
            {"frame": 1, "p_correct": 0.95, "thr": 0.5, "stage": "filter"},  # all by the filter
            {"frame": 2, "p_correct": 0.97, "thr": 0.5, "stage": "filter"},
            {"frame": 2, "p_correct": 0.02, "thr": 0.5, "stage": "expert"},  # one by the expert: rest
            {"frame": 3, "p_correct": 0.61, "thr": 0.5, "stage": "filter"},  # 0.11 away: filter
        ],
    )
    assert strata_of(range(6), [report], band=0.1) == {
        0: "uncertain", 1: "filter", 2: "rest", 3: "filter", 4: "rest", 5: "rest",
    }  # fmt: skip


def test_draw_sizes_and_probabilities():
    strata = {f: "uncertain" if f < 10 else "filter" if f < 30 else "rest" for f in range(100)}
    picked, sizes = draw(strata, Design(size=20, uncertain_share=0.4, filter_share=0.2, seed=1))
    assert sizes == {"uncertain": (10, 8), "filter": (20, 4), "rest": (70, 8)}
    assert len({p.frame for p in picked}) == 20 and all(strata[p.frame] == p.stratum for p in picked)
    assert {p.stratum: p.inclusion_prob for p in picked} == {"uncertain": 0.8, "filter": 0.2, "rest": 8 / 70}
    # the same seed draws the same frames
    assert draw(strata, Design(size=20, uncertain_share=0.4, filter_share=0.2, seed=1))[0] == picked


def test_a_stratum_left_undrawn_is_refused():
    strata = {f: "uncertain" if f < 10 else "rest" for f in range(100)}
    with pytest.raises(InputError, match="stratum rest has 90 frames and the design draws none"):
        draw(strata, Design(size=4, uncertain_share=1.0, filter_share=0.0, seed=1))
    with pytest.raises(InputError, match="sum to at most 1"):
        Design(size=4, uncertain_share=0.8, filter_share=0.4).check()
