"""Choosing the cascade band: hand-worked figures, constraints, and `ropewatch cascade tune` end to end."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from ropewatch_core.cascade import NoFeasibleBand, evaluate_band, tune_band
from ropewatch_core.model.checkpoint import read_checkpoint, save_checkpoint
from ropewatch_core.model.fast_filter import load_filter
from ropewatch_core.model.pipeline import Predictor
from ropewatch_validator.cli.main import main as ropewatch
from ropewatch_validator.learn.data import read_manifest
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic
from support.images import noise_png

# persons: filter P, expert says correct?, reference y, frame
P = np.array([0.95, 0.90, 0.10, 0.50, 0.97, 0.93])
EXPERT = np.array([1, 1, 0, 0, 1, 0], dtype=bool)
Y = np.array([1, 1, 0, 0, 1, 0])
FRAME = np.array(["A", "A", "B", "C", "C", "D"])


def test_band_figures_by_hand():
    c = evaluate_band(P, EXPERT, Y, FRAME, (0.2, 0.92))
    # >= 0.92 correct: persons 0, 4, 5; <= 0.2 wrong: person 2; deferred: 1 (A), 3 (C)
    # frames: A and C deferred, B and D skip → 2/4; persons decided by the filter 4/6
    assert (c.frame_skip, c.person_filter_share) == (0.5, pytest.approx(4 / 6))
    # final = [C, C, W, W, C, C]: person 5 (expert wrong) is called correct → agreement 5/6;
    # wrong persons 2, 3, 5: recall 2/3, the expert's 3/3
    assert c.agreement == pytest.approx(5 / 6) and c.recall_wrong == pytest.approx(2 / 3)
    assert c.expert_recall_wrong == 1.0 and (c.n_persons, c.n_frames) == (6, 4)


def test_tuned_band_by_hand():
    # person 5 (P 0.93, wrong) forces hi > 0.93; person 1 (0.90, correct) forces lo < 0.90, so it is
    # deferred and frame A with it; D is deferred unless lo >= 0.93 (which would also call person 1
    # wrong). Best: lo = 0.5 (person 3 → wrong, frame C skips with person 4 >= hi), hi = 0.95
    # (person 0 decided too): frames B and C skip = 2/4, persons 0, 2, 3, 4 = 4/6, agreement 1
    c = tune_band(P, EXPERT, Y, FRAME, target=0.99)
    assert (c.lo, c.hi) == (0.5, 0.95)
    assert (c.frame_skip, c.person_filter_share, c.agreement, c.recall_wrong) == (
        0.5,
        pytest.approx(4 / 6),
        1,
        1,
    )


def test_tuned_band_is_the_best_feasible_one_by_brute_force():
    rng = np.random.default_rng(3)
    n = 60
    y = rng.integers(0, 2, n)
    expert = np.where(rng.random(n) < 0.9, y, 1 - y).astype(bool)
    p = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, 0.2, n), 0, 1).round(3)
    frame = rng.integers(0, 20, n)
    c = tune_band(p, expert, y, frame, target=0.95)
    assert c.agreement >= 0.95 and c.recall_wrong >= c.expert_recall_wrong
    edges = sorted({0.0, 1.0, *p.tolist()})
    feasible = [
        b
        for lo, hi in itertools.combinations_with_replacement(edges, 2)
        for b in [evaluate_band(p, expert, y, frame, (lo, hi))]
        if b.agreement >= 0.95 and b.recall_wrong >= b.expert_recall_wrong
    ]
    assert c.frame_skip == max(b.frame_skip for b in feasible)


def built_dataset(tmp_path):
    """A `dataset build` directory (frames kept) of two sandbox jobs in two tasks."""
    state = sandbox.CvatState()
    for job, task in ((101, 11), (102, 12)):
        gen = synthetic.generate(3, job_id=job, task_id=task, width=320, height=240, seed=job, extras=False)
        gen.frames_bytes = {n: noise_png(100 * job + n) for n in range(3)}
        state.add(gen)
    data = tmp_path / "ds"
    with sandbox.serve(state) as (url, _):
        assert (
            ropewatch(["dataset", "build", "101", "102", "--server-host", url, "--output-dir", str(data)])
            == 0
        )
    return data


def test_no_feasible_band_is_refused_with_its_figures():
    # the filter says P = 1 for everyone, the expert says wrong for everyone: even [0, 1] calls all
    # persons correct, agreement 0 and recall(wrong) 0 against the expert's 1
    p, expert, y, frame = np.ones(4), np.zeros(4, bool), np.zeros(4, int), np.array(["A", "A", "B", "C"])
    with pytest.raises(NoFeasibleBand) as err:
        tune_band(p, expert, y, frame, target=0.99)
    assert err.value.exit_code == 1
    assert "even [0, 1] gives agreement 0.00% and recall(wrong) 0.0000" in str(err.value)


def test_cascade_tune_writes_nothing_and_exits_1_without_a_feasible_band(
    tmp_path, fixed_logit_checkpoint, tiny_filter_dict, capsys
):
    data = built_dataset(tmp_path)
    always_wrong = tmp_path / "expert.pt"
    save_checkpoint(fixed_logit_checkpoint(bias=(6.0, -6.0)), always_wrong)
    sure = dict(tiny_filter_dict)
    sure["state_dict"] = dict(sure["state_dict"])
    sure["state_dict"]["fc.weight"] = torch.zeros_like(sure["state_dict"]["fc.weight"])
    sure["state_dict"]["fc.bias"] = torch.full_like(sure["state_dict"]["fc.bias"], 50.0)  # P = 1
    path = tmp_path / "filter.pt"
    save_checkpoint(sure, path)
    before = path.read_bytes()
    capsys.readouterr()
    argv = ["cascade", "tune", str(path), "--expert", str(always_wrong), "--data-dir", str(data)]
    assert ropewatch(argv) == 1
    assert ropewatch([*argv, "-o", str(tmp_path / "new.pt")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 2 and "no band meets the targets" in err
    assert path.read_bytes() == before and not (tmp_path / "new.pt").exists()


def test_cascade_tune_end_to_end(tmp_path, tiny_checkpoint, tiny_filter_dict, capsys):
    data = built_dataset(tmp_path)
    path = tmp_path / "filter.pt"
    save_checkpoint(tiny_filter_dict, path)
    assert (
        ropewatch(["cascade", "tune", str(path), "--expert", str(tiny_checkpoint), "--data-dir", str(data)])
        == 0
    )
    assert "frames skip the expert" in capsys.readouterr().out
    raw, _ = read_checkpoint(path)
    lo, hi = raw["band"]
    assert load_filter(path).band == (lo, hi) and raw["cascade"]["target"] == 0.99
    # the stored figures, recomputed through the function's own path: Predictor with and without filter
    rows = read_manifest(data, "val")
    cascade, expert_only = (
        Predictor(str(tiny_checkpoint), filter_path=str(path)),
        Predictor(str(tiny_checkpoint)),
    )
    p, e, frames = [], [], []
    for frame_file in sorted({r["frame_file"] for r in rows}):
        mine = [r for r in rows if r["frame_file"] == frame_file]
        boxes = np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in mine])
        data_bytes = (data / frame_file).read_bytes()
        p += [d.p_filter for d in cascade.run(data_bytes, boxes=boxes).detections]
        e += [d.value == "correct" for d in expert_only.run(data_bytes, boxes=boxes).detections]
        frames += [frame_file] * len(mine)
    y = [int(r["y"]) for r in sorted(rows, key=lambda r: r["frame_file"])]
    again = evaluate_band(np.array(p), np.array(e), np.array(y), np.array(frames), (lo, hi))
    assert again.frame_skip == pytest.approx(raw["cascade"]["frame_skip"])
    assert again.agreement == pytest.approx(raw["cascade"]["agreement"]) and again.agreement >= 0.99
