"""evaluation.compare against independent oracles: sklearn for the metrics, statsmodels for McNemar, a
brute-force (concatenate the drawn frames, ask sklearn) bootstrap on the same resamples, and a coverage
simulation of the clustered bootstrap's 95% CI on data whose true values are known in closed form."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
)
from statsmodels.stats.contingency_tables import mcnemar

from ropewatch_core.errors import InputError
from ropewatch_validator.evaluation import compare
from ropewatch_validator.evaluation.compare import (
    CI_METRICS,
    binary_metrics,
    clustered_bootstrap,
    compare_pair,
    frame_ids,
    good_direction,
    mcnemar_exact,
    percentile_ci,
    resample_frames,
    resampled_metrics,
    verdict,
)

VALUES = ["wrong", "correct"]


def scored(seed: int, n: int, n_frames: int, ties: bool = False):
    """Random truth, frames and P(correct) that carry some signal (rounded to force tied scores)."""
    rng = np.random.default_rng(seed)
    truth = np.where(rng.random(n) < 0.4, "correct", "wrong")
    p = 1 / (1 + np.exp(-(np.where(truth == "correct", 1.0, -1.0) + rng.normal(0, 1.2, n))))
    return list(truth), rng.integers(0, n_frames, n), (np.round(p, 1) if ties else p)


@pytest.mark.parametrize(("seed", "thr", "ties"), [(0, 0.5, False), (1, 0.0543, False), (2, 0.3, True)])
def test_binary_metrics_equal_sklearn(seed, thr, ties):
    truth, _, p = scored(seed, 700, 200, ties)
    m = binary_metrics(truth, p, thr)
    pred = np.where(p >= thr, "correct", "wrong")
    prec, rec, f1, sup = precision_recall_fscore_support(truth, pred, labels=VALUES, zero_division=np.nan)
    for i, v in enumerate(VALUES):
        c = m.per_class[v]
        assert (c.precision, c.recall, c.f1, c.support) == pytest.approx((prec[i], rec[i], f1[i], sup[i]))
    cm = confusion_matrix(truth, pred, labels=VALUES)
    assert np.array_equal(np.array(m.confusion), cm)
    assert (m.tn, m.fp, m.fn, m.tp) == tuple(int(x) for x in cm.ravel())
    assert m.accuracy == pytest.approx(accuracy_score(truth, pred))
    assert m.ap == pytest.approx(average_precision_score(np.array(truth) == "correct", p), abs=1e-12)
    assert m.flips_per_1000 == pytest.approx(cm[0, 1] / len(truth) * 1000)
    assert m.metric("per_class.wrong.f1") == pytest.approx(f1[0])


def test_bad_input_is_one_clear_error():
    with pytest.raises(InputError, match="not in"):
        binary_metrics(["wrong", "unknown"], np.array([0.1, 0.2]), 0.5)
    with pytest.raises(InputError, match="2 scores for 3 persons"):
        binary_metrics(["wrong"] * 3, np.array([0.1, 0.2]), 0.5)
    with pytest.raises(InputError, match="not finite"):
        binary_metrics(["wrong"], np.array([np.nan]), 0.5)
    with pytest.raises(InputError, match="unknown metric 'f1'"):
        binary_metrics(["wrong"], np.array([0.1]), 0.5).metric("f1")


def test_good_direction_and_the_verdict_of_a_difference():
    assert good_direction("flips_per_1000") == -1 and good_direction("fp") == -1
    assert good_direction("per_class.wrong.f1") == 1 and good_direction("ap") == 1
    assert good_direction("thr") is None and good_direction("per_class.wrong.support") is None
    assert (
        verdict("flips_per_1000", 2.0, 9.0) == "worse" and verdict("flips_per_1000", -9.0, -2.0) == "better"
    )
    assert verdict("accuracy", 0.01, 0.02) == "better" and verdict("accuracy", -0.02, -0.01) == "worse"
    assert verdict("accuracy", -0.01, 0.02) == verdict("ap", None, None) == "no significant difference"
    assert verdict("thr", 0.1, 0.2) == "no significant difference"


@pytest.mark.parametrize("seed", range(12))
def test_mcnemar_exact_equals_statsmodels(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    a, b = rng.random(n) < rng.random(), rng.random(n) < rng.random()
    p, n10, n01 = mcnemar_exact(a, b)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    assert (n10, n01) == (table[0][1], table[1][0])
    assert p == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9)


def test_mcnemar_without_discordant_persons_is_one_and_balanced_is_one():
    same = np.array([True, False, True])
    assert mcnemar_exact(same, same) == (1.0, 0, 0)
    a, b = np.array([True, False]), np.array([False, True])
    assert mcnemar_exact(a, b)[0] == pytest.approx(mcnemar([[0, 1], [1, 0]], exact=True).pvalue)


def brute_force(truth, frames, p, thr, draws):
    """Each resample built for real (the persons of every drawn frame, repeats too), scored by sklearn."""
    truth, frames, p = np.asarray(truth), np.asarray(frames), np.asarray(p)
    uniq = np.unique(frames)
    members = [np.flatnonzero(frames == f) for f in uniq]
    out = {k: [] for k in CI_METRICS}
    for row in draws:
        idx = np.concatenate([members[f] for f in row])
        t, s = truth[idx], p[idx]
        pred = np.where(s >= thr, "correct", "wrong")
        prf = precision_recall_fscore_support(t, pred, labels=VALUES, zero_division=np.nan)[:3]
        for i, v in enumerate(VALUES):
            for m, values in zip(("precision", "recall", "f1"), prf):
                out[f"per_class.{v}.{m}"].append(values[i])
        out["accuracy"].append(accuracy_score(t, pred))
        out["ap"].append(average_precision_score(t == "correct", s))
        out["flips_per_1000"].append(np.sum((t == "wrong") & (pred == "correct")) / t.size * 1000)
    return {k: np.array(v) for k, v in out.items()}


def test_vectorised_bootstrap_equals_brute_force_on_the_same_resamples():
    truth, frames, p = scored(3, 60, 15, ties=True)
    frames = np.array([f"cam1/{f:04d}.jpg" for f in frames])  # any frame keys, not only ints
    k = len(np.unique(frames))
    draws = resample_frames(k, 150, seed=7)
    fast = resampled_metrics(truth, frames, p, 0.5, draws)
    slow = brute_force(truth, frames, p, 0.5, draws)
    for key in CI_METRICS:
        assert np.allclose(fast[key], slow[key], rtol=0, atol=1e-12, equal_nan=True), key
    ci = clustered_bootstrap(truth, frames, p, 0.5, n_boot=150, seed=7)
    for key in CI_METRICS:
        lo, hi = np.percentile(slow[key], [2.5, 97.5])
        assert (ci[key].low, ci[key].high) == pytest.approx((lo, hi), abs=1e-12), key


def test_bootstrap_defaults_are_2000_resamples_of_seed_0():
    truth, frames, p = scored(4, 80, 20)
    draws = np.random.default_rng(0).integers(0, len(np.unique(frames)), size=(2000, len(np.unique(frames))))
    expected = resampled_metrics(truth, frames, p, 0.5, draws)
    ci = clustered_bootstrap(truth, frames, p, 0.5)
    assert ci["accuracy"].low == pytest.approx(np.percentile(expected["accuracy"], 2.5))
    assert ci["ap"].high == pytest.approx(np.percentile(expected["ap"], 97.5))


def test_compare_pair_is_paired_on_the_same_resamples():
    truth, frames, pa = scored(5, 50, 12)
    pb = np.clip(pa + np.random.default_rng(9).normal(0, 0.2, len(pa)), 0, 1)
    c = compare_pair(truth, frames, pa, 0.5, pb, 0.4, n_boot=120, seed=3)
    draws = resample_frames(len(np.unique(frames)), 120, seed=3)
    sa, sb = brute_force(truth, frames, pa, 0.5, draws), brute_force(truth, frames, pb, 0.4, draws)
    ma, mb = binary_metrics(truth, pa, 0.5), binary_metrics(truth, pb, 0.4)
    for key in CI_METRICS:
        d = c.diffs[key]
        assert d.estimate == pytest.approx(mb.metric(key) - ma.metric(key))
        finite = np.isfinite(sb[key] - sa[key])
        lo, hi = np.percentile((sb[key] - sa[key])[finite], [2.5, 97.5])
        assert (d.low, d.high) == pytest.approx((lo, hi), abs=1e-12), key
    a_right = (pa >= 0.5) == (np.array(truth) == "correct")
    b_right = (pb >= 0.4) == (np.array(truth) == "correct")
    table = [[np.sum(a_right & b_right), np.sum(a_right & ~b_right)], [np.sum(~a_right & b_right), 0]]
    assert (c.a_right_b_wrong, c.a_wrong_b_right) == (table[0][1], table[1][0])
    assert c.mcnemar_p == pytest.approx(mcnemar(table, exact=True).pvalue)


def test_percentile_ci_ignores_undefined_resamples_and_is_none_without_any():
    assert percentile_ci(np.array([np.nan, 1.0, 1.0])).low == 1.0
    assert percentile_ci(np.array([np.nan])).low is None
    assert frame_ids(["b", "a", "b"]).tolist() == [1, 0, 1]


def test_clustered_ci_covers_the_true_value_at_least_90_percent_of_200_data_sets():
    """Frames share a random effect u ~ N(0, 1) (light, camera), so their persons are correlated.
    Score s = ±1.5 + u + e with e ~ N(0, 1); the truth is ``correct`` with probability 0.4; thr at
    P = 0.5 (s = 0). Then accuracy = Φ(1.5/√2) and flips per 1,000 = 600·Φ(−1.5/√2) exactly."""
    rng = np.random.default_rng(2026)
    true = {"accuracy": norm.cdf(1.5 / np.sqrt(2)), "flips_per_1000": 600 * norm.cdf(-1.5 / np.sqrt(2))}
    covered = {k: 0 for k in true}
    for _ in range(200):
        sizes = rng.integers(1, 7, 150)  # persons per frame, independent of u
        frames = np.repeat(np.arange(sizes.size), sizes)
        u = rng.normal(0, 1, sizes.size)[frames]
        is_c = rng.random(frames.size) < 0.4
        s = np.where(is_c, 1.5, -1.5) + u + rng.normal(0, 1, frames.size)
        truth = np.where(is_c, "correct", "wrong").tolist()
        p = 1 / (1 + np.exp(-s))
        ci = clustered_bootstrap(truth, frames, p, 0.5, n_boot=500, seed=int(rng.integers(1e9)))
        for k, value in true.items():
            covered[k] += ci[k].low <= value <= ci[k].high
    assert covered["accuracy"] >= 180 and covered["flips_per_1000"] >= 180, covered


def test_the_bootstrap_in_blocks_equals_it_in_one(monkeypatch):
    truth, frames, p = scored(6, 90, 30)
    draws = resample_frames(len(np.unique(frames)), 50, seed=1)
    whole = resampled_metrics(truth, frames, p, 0.5, draws)
    monkeypatch.setattr(compare, "CHUNK", 200)  # 2 resamples per block
    blocks = resampled_metrics(truth, frames, p, 0.5, draws)
    for key in CI_METRICS:
        assert np.array_equal(whole[key], blocks[key], equal_nan=True), key
