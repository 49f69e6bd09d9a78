"""The stratified Horvitz-Thompson estimator of ``review estimate`` (evaluation/estimate.py):
exact against brute force over every possible sample of a small population, and by simulation -- a
known population of 3,000 frames, 200 repeated stratified samples: the 95% intervals cover the task's
true rates in at least 90% of the samples, and the total is unbiased."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from ropewatch_validator.evaluation.estimate import frame_counts, ht_ratio, ht_total, task_estimates

VALUES = ("wrong", "correct")


def test_total_and_its_variance_estimator_are_unbiased_over_every_sample():
    # strata a (N=5, n=2) and b (N=4, n=3): all C(5,2) * C(4,3) = 40 samples, equally likely
    y = {"a": [3.0, 0.0, 1.0, 7.0, 2.0], "b": [10.0, 4.0, 4.0, 1.0]}
    sizes, n = {"a": 5, "b": 4}, {"a": 2, "b": 3}
    truth = sum(sum(v) for v in y.values())
    estimates, variances = [], []
    for pick_a in itertools.combinations(range(5), n["a"]):
        for pick_b in itertools.combinations(range(4), n["b"]):
            ys = [y["a"][i] for i in pick_a] + [y["b"][i] for i in pick_b]
            est = ht_total(ys, ["a"] * 2 + ["b"] * 3, sizes)
            estimates.append(est.value)
            variances.append(est.se**2)
    assert len(estimates) == 40
    assert np.mean(estimates) == pytest.approx(truth)  # unbiased, exactly
    assert np.mean(variances) == pytest.approx(np.var(estimates))  # so is the variance estimator
    # one sample by hand: a = {3, 0} (weight 5/2), b = {10, 4, 4} (weight 4/3)
    one = ht_total([3, 0, 10, 4, 4], ["a", "a", "b", "b", "b"], sizes)
    assert one.value == pytest.approx(2.5 * 3 + 4 / 3 * 18)
    var = 25 * (1 - 2 / 5) * np.var([3, 0], ddof=1) / 2 + 16 * (1 - 3 / 4) * np.var([10, 4, 4], ddof=1) / 3
    assert one.se == pytest.approx(math.sqrt(var))


def test_a_census_has_no_sampling_error_and_one_of_many_has_no_variance():
    assert ht_total([1, 2], ["a", "a"], {"a": 2}).se == 0.0
    assert ht_total([1], ["a"], {"a": 5}).se is None
    assert ht_ratio([0], [0], ["a"], {"a": 1}).value is None  # nothing to divide by


def _population(rng: np.random.Generator) -> tuple[pd.DataFrame, dict[int, str]]:
    """3,000 frames: per frame, persons by true class, and how the model read each (matched pairs)."""
    strata = {"uncertain": (300, 0.35), "filter": (500, 0.05), "rest": (2200, 0.08)}  # N, flip rate
    rows, where = [], {}
    frame = 0
    for h, (big_n, flip) in strata.items():
        for _ in range(big_n):
            wrong, correct = rng.poisson(0.8), rng.poisson(1.5)
            w2c, c2w = rng.binomial(wrong, flip), rng.binomial(correct, flip / 2)
            rows.append(
                {
                    "frame": frame,
                    "refs": wrong + correct,
                    "dangerous_flips": w2c,
                    "tp_wrong": wrong - w2c,
                    "fn_wrong": w2c,
                    "fp_wrong": c2w,
                    "tp_correct": correct - c2w,
                    "fn_correct": c2w,
                    "fp_correct": w2c,
                }
            )
            where[frame] = h
            frame += 1
    return pd.DataFrame(rows).set_index("frame"), where


def test_simulation_coverage_and_unbiasedness():
    rng = np.random.default_rng(20261204)
    pop, where = _population(rng)
    sizes = {h: sum(1 for v in where.values() if v == h) for h in ("uncertain", "filter", "rest")}
    draw = {"uncertain": 60, "filter": 40, "rest": 100}
    t = pop.sum()
    truth = {
        "flips": 1000 * t["dangerous_flips"] / t["refs"],
        "recall_wrong": t["tp_wrong"] / (t["tp_wrong"] + t["fn_wrong"]),
        "f1_wrong": 2 * t["tp_wrong"] / (2 * t["tp_wrong"] + t["fp_wrong"] + t["fn_wrong"]),
        "f1_correct": 2 * t["tp_correct"] / (2 * t["tp_correct"] + t["fp_correct"] + t["fn_correct"]),
    }
    by_stratum = {h: [f for f, s in where.items() if s == h] for h in sizes}
    covered = {k: 0 for k in truth}
    totals, total_ses = [], []
    reps = 200
    for _ in range(reps):
        sample = {int(f): h for h in sizes for f in rng.choice(by_stratum[h], draw[h], replace=False)}
        est = task_estimates(pop, sample, sizes, VALUES)
        got = {
            "flips": est["dangerous_flips_per_1000"],
            "recall_wrong": est["per_class"]["wrong"]["recall"],
            "f1_wrong": est["per_class"]["wrong"]["f1"],
            "f1_correct": est["per_class"]["correct"]["f1"],
        }
        for k, e in got.items():
            covered[k] += e["low"] <= truth[k] <= e["high"]
        frames = sorted(sample)
        flips = ht_total(pop.loc[frames, "dangerous_flips"], [sample[f] for f in frames], sizes)
        totals.append(flips.value)
        total_ses.append(flips.se)
    coverage = {k: v / reps for k, v in covered.items()}
    assert all(c >= 0.90 for c in coverage.values()), coverage
    # the HT total of flips is unbiased: the mean of 200 estimates is within one standard error of a
    # single estimate of the truth, and within 3 standard errors of the mean
    mean, sd = float(np.mean(totals)), float(np.std(totals, ddof=1))
    assert abs(mean - t["dangerous_flips"]) <= float(np.mean(total_ses))
    assert abs(mean - t["dangerous_flips"]) <= 3 * sd / math.sqrt(reps)
    # and its standard error estimates the spread of the estimates
    assert float(np.mean(total_ses)) == pytest.approx(sd, rel=0.15)


def test_frame_counts_from_report_objects():
    objects = pd.DataFrame(
        [
            ["prediction", 0, "tp", "wrong"],
            ["prediction", 0, "flip_wrong_to_correct", "correct"],
            ["prediction", 2, "flip_correct_to_wrong", "wrong"],
            ["prediction", 2, "background", "correct"],
            ["reference", 0, "tp", "wrong"],
            ["reference", 0, "tp", "wrong"],
            ["reference", 2, "tp", "correct"],
            ["reference", 2, "missed", "wrong"],
        ],
        columns=["role", "frame", "error", "safety_rope_use"],
    )
    c = frame_counts(objects, "safety_rope_use", VALUES)
    assert c.loc[0].to_dict() == {
        "refs": 2, "dangerous_flips": 1, "tp_wrong": 1, "fp_wrong": 0, "fn_wrong": 1,
        "tp_correct": 0, "fp_correct": 1, "fn_correct": 0,
    }  # fmt: skip
    assert (c.loc[2, "refs"], c.loc[2, "fp_wrong"], c.loc[2, "fn_correct"], c.loc[2, "dangerous_flips"]) == (
        2,
        1,
        1,
        0,
    )
