"""Calibration, ranking and threshold analysis against sklearn and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_curve,
    roc_auc_score,
)

from ropewatch_validator.trace import calibration as cal


@pytest.fixture
def scored() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 400)
    z = rng.normal(0, 1, 400) + 1.5 * (2 * y - 1)
    z[:40] = np.round(z[:40])  # ties
    return z, y


def test_ece_hand_computed() -> None:
    # p = P(correct); top-label confidences 0.9, 0.9, 0.6, 0.6 (15 bins: 0.9 -> bin 13, 0.6 -> bin 8)
    p = np.array([0.9, 0.1, 0.6, 0.4])
    y = np.array([1, 1, 0, 0])  # hits: yes, no, no, yes
    # bin 13: conf 0.9, acc 0.5 -> gap 0.4 (2 items); bin 8: conf 0.6, acc 0.5 -> gap 0.1 (2 items)
    assert cal.ece(p, y) == pytest.approx((2 * 0.4 + 2 * 0.1) / 4)
    r = cal.reliability(p, y)
    assert r["count"].sum() == 4 and r["count"][13] == 2 and r["count"][8] == 2
    assert cal.ece(np.array([1.0, 0.0]), np.array([1, 0])) == pytest.approx(0.0)


def test_ap_auc_pr_against_sklearn(scored) -> None:
    z, y = scored
    p = cal.probability(z, 1.3)
    assert cal.roc_auc(z, y) == pytest.approx(roc_auc_score(y, z))
    pr = cal.pr_curve(p, y)
    assert pr["ap"] == pytest.approx(average_precision_score(y, p))
    sk_p, sk_r, sk_t = precision_recall_curve(y, p)
    # sklearn lists ascending thresholds and appends (1, 0); ours are descending
    np.testing.assert_allclose(pr["precision"][::-1], sk_p[:-1])
    np.testing.assert_allclose(pr["recall"][::-1], sk_r[:-1])
    assert cal.pr_curve(1 - p, 1 - y)["ap"] == pytest.approx(average_precision_score(1 - y, 1 - p))


def test_sweep_and_operating_points_against_sklearn(scored) -> None:
    z, y = scored
    sw = cal.threshold_sweep(z, y)
    for i in range(0, sw["cut"].size, 37):
        pred = (z >= sw["cut"][i]).astype(int)
        f1s = f1_score(y, pred, labels=[0, 1], average=None, zero_division=0)
        assert sw["f1_wrong"][i] == pytest.approx(f1s[0]) and sw["f1_correct"][i] == pytest.approx(f1s[1])
    ops = cal.choose_thresholds(z, y, temperature=2.0, required_recall_wrong=0.9, current_thr=0.5)
    best = ops["max_macro_f1"]
    brute = max(f1_score(y, (z >= c).astype(int), average="macro", zero_division=0) for c in np.unique(z))
    assert best.macro_f1 == pytest.approx(brute)
    assert best.confusion == confusion_matrix(y, (z >= best.cut).astype(int), labels=[0, 1]).tolist()
    assert cal.probability(best.cut, 2.0) == pytest.approx(best.thr)
    rec = ops["recall_wrong"]
    pred = (z >= rec.cut).astype(int)
    assert (confusion_matrix(y, pred)[0, 0] / (y == 0).sum()) >= 0.9
    # the lowest such cut: one step lower misses the requirement
    lower = sw["cut"][sw["cut"] < rec.cut]
    assert lower.size == 0 or ((z[y == 0] < lower.max()).mean() < 0.9)
    cur = ops["current"]
    assert cur.confusion == confusion_matrix(y, (z >= 0).astype(int)).tolist()
    assert cur.macro_f1 == pytest.approx(f1_score(y, (z >= 0).astype(int), average="macro"))


@pytest.mark.parametrize("true_t", [0.5, 2.5])
def test_temperature_recovered_within_5_percent(true_t: float) -> None:
    rng = np.random.default_rng(11)
    z_cal = rng.normal(0, 3, 20000)  # calibrated logits: y ~ Bernoulli(sigmoid(z_cal))
    y = (rng.random(z_cal.size) < cal.probability(z_cal)).astype(int)
    z = z_cal * true_t  # what an over/under-confident model logs
    fitted = cal.fit_temperature(z, y)
    assert abs(fitted - true_t) / true_t < 0.05
    assert cal.nll(z, y, fitted) <= cal.nll(z, y, 1.0)
    assert cal.ece(cal.probability(z, fitted), y) < cal.ece(cal.probability(z, 1.0), y)


def test_threshold_reexpression_keeps_decisions() -> None:
    z = np.linspace(-6, 6, 1001)
    for thr, t_old, t_new in [(0.5, 1.0, 2.0), (0.3, 1.0, 0.7), (0.8, 1.5, 3.0)]:
        new_thr = cal.reexpress_threshold(thr, t_old, t_new)
        np.testing.assert_array_equal(
            cal.probability(z, t_old) >= thr, cal.probability(z, t_new) >= new_thr - 1e-15
        )
        assert cal.threshold_to_logit(new_thr, t_new) == pytest.approx(t_old * np.log(thr / (1 - thr)))


def test_analyse_block(scored) -> None:
    z, y = scored
    out = cal.analyse(z, y, temperature=1.0, thr=0.5, required_recall_wrong=0.9).model_dump()
    assert out["n"] == 400 and out["ece_kind"] == "top-label"
    assert out["roc_auc"] == pytest.approx(roc_auc_score(y, z))
    assert out["fitted"]["nll"] <= out["nll"]
    assert set(out["fitted"]["operating_points"]) == {"max_macro_f1", "recall_wrong", "current"}
    one_class = cal.analyse(z[y == 1], y[y == 1]).model_dump()
    assert one_class["fitted"] is None and one_class["roc_auc"] is None
    with pytest.raises(ValueError, match="both classes"):
        cal.fit_temperature(z[y == 1], y[y == 1])


def test_report_curves_are_thinned_but_metrics_use_all_points() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 5000)
    z = rng.normal(0, 1, 5000) + (2 * y - 1)
    out = cal.analyse(z, y).model_dump()
    assert len(out["fitted"]["sweep"]["cut"]) == 501 and len(out["pr"]["correct"]["precision"]) == 501
    assert out["pr"]["correct"]["ap"] == pytest.approx(average_precision_score(y, cal.probability(z)))
    best = out["fitted"]["operating_points"]["max_macro_f1"]
    assert best["macro_f1"] == pytest.approx(max(cal.threshold_sweep(z, y)["macro_f1"]))
