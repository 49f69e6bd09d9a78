"""Baselines that mean what they say (issue 17, item 5): the statistics against oracles (statsmodels'
exact binomial interval, an enumerated bootstrap), the reference version and the own baseline read
from a real store (a run is never part of either), and alert rules with ``significance``."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from statsmodels.stats.proportion import proportion_confint

from ropewatch_validator.cli.main import main
from ropewatch_validator.evaluation.baseline_stats import (
    Kind,
    RunValues,
    difference,
    pooled,
    proportion_interval,
)
from ropewatch_validator.ops import baselines
from ropewatch_validator.ops.alerts.rules import ConfigError, fired_alerts, parse_config, record_and_queue
from ropewatch_validator.ops.history import open_store

FLIPS = "dangerous_flips_per_1000"


# -- statistics -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("k", "n"), [(5, 106), (0, 40), (40, 40), (17, 663)])
def test_one_runs_interval_is_the_exact_binomial_one(k, n):
    low, high = proportion_confint(k, n, alpha=0.05, method="beta")  # Clopper-Pearson
    ci = proportion_interval(k, n, 1000.0)
    assert ci is not None and (ci.low, ci.high) == pytest.approx((low * 1000, high * 1000))


def test_pooled_interval_is_the_bootstrap_over_runs():
    """Four runs: every resample of runs (4^4, equally likely) enumerated gives the exact bootstrap
    distribution of the pooled rate; the percentile interval's ends are points of it, near its 2.5%
    and 97.5% quantiles."""
    num, den = np.array([3.0, 5.0, 2.0, 9.0]), np.array([400.0, 410.0, 390.0, 405.0])
    est = pooled(RunValues(num, den, 1000.0))
    assert est is not None and est.value == pytest.approx(19 / 1605 * 1000) and est.runs == 4
    exact = np.sort(
        [num[list(i)].sum() / den[list(i)].sum() * 1000 for i in itertools.product(range(4), repeat=4)]
    )
    assert est.ci is not None
    for end, q in ((est.ci.low, 0.025), (est.ci.high, 0.975)):
        assert np.isclose(exact, end).any()  # a pooled value some resample of runs has
        assert abs(np.searchsorted(exact, end) / len(exact) - q) < 0.04
    assert pooled(RunValues(num[:1], den[:1], 1000.0)).ci is None  # one run: no spread over jobs


def test_difference_of_two_versions_is_unpaired_and_signed_b_minus_a():
    a = RunValues(np.array([3.0, 5.0, 2.0, 4.0]), np.array([400.0, 410.0, 390.0, 405.0]), 1000.0)
    b = RunValues(np.array([30.0, 40.0, 35.0, 41.0]), np.array([400.0, 410.0, 390.0, 405.0]), 1000.0)
    diff = difference(a, b)
    assert diff is not None and diff.value == pytest.approx((146 - 14) / 1605 * 1000)
    assert diff.ci is not None and 0 < diff.ci.low < diff.value < diff.ci.high


# -- the two baselines, from a store ----------------------------------------------------------------
@pytest.fixture
def store(tmp_path, make_report):
    """v1: jobs 1-3 with 5, 4, 6 flips; v2: jobs 4-6 with 20, 25, 30 flips (106 persons each)."""
    s = open_store(str(tmp_path / "h.sqlite"))
    for job, (version, wc) in enumerate(
        [("v1", 5), ("v1", 4), ("v1", 6), ("v2", 20), ("v2", 25), ("v2", 30)], 1
    ):
        s.record_run(make_report(job=job, model_version=version, cm=((45 - wc, wc), (3, 55 - wc))))
    yield s
    s.close()


def test_reference_is_the_previous_version_or_the_pinned_one(store, make_report):
    assert baselines.reference_of(store, "v1") is None
    assert baselines.reference_of(store, "v2") == ("v1", "previous version")
    assert baselines.reference_of(store, "v3") == ("v2", "previous version")  # not stored yet: the last seen
    store.record_run(make_report(job=7, model_version="v3"))
    store.pin_reference("v3", "v1", "what production runs")
    assert baselines.reference_of(store, "v3") == ("v1", "pinned reference")
    with pytest.raises(ValueError, match="no stored runs of model version 'v9'"):
        store.pin_reference("v3", "v9")


def test_a_run_is_never_part_of_its_own_baseline(store):
    ids = [r["id"] for r in store.trend(model_version="v2")]
    flips = [20 / 106 * 1000, 25 / 106 * 1000]
    first = baselines.comparisons(store, "v2", [FLIPS], before_run=ids[0])
    assert first.own.run_ids == () and first.own.values == {}  # its first run has no earlier run
    third = baselines.comparisons(store, "v2", [FLIPS], before_run=ids[2])
    assert third.own.run_ids == tuple(ids[:2]) and third.own.values[FLIPS].value == pytest.approx(
        np.median(flips)
    )
    assert third.own.label == "own earlier runs of v2 (median of its first 2 earlier runs; drift)"
    store.pin_baseline("v2", ids)  # pinned runs that hold the judged run: it is left out
    assert baselines.comparisons(store, "v2", [FLIPS], before_run=ids[1]).own.run_ids == (ids[0], ids[2])
    # the reference pools the other version's runs: Σ flips / Σ persons
    ref = third.reference
    assert (
        ref is not None
        and ref.kind is Kind.REFERENCE
        and ref.values[FLIPS].value == pytest.approx(15 / 318 * 1000)
    )
    assert ref.label == "reference v1 (previous version; 3 jobs pooled, unpaired)"


def test_a_report_validated_again_is_judged_without_its_stored_run(store, make_report):
    again = make_report(job=6, model_version="v2", cm=((15, 30), (3, 25)))  # job 6's stored state (--force)
    compared = baselines.for_report(store, again, [FLIPS], 5)
    assert compared.own.run_ids == tuple(r["id"] for r in store.trend(model_version="v2")[:2])


def test_versions_table_change_has_the_difference_and_its_interval(store):
    [change] = baselines.version_changes(store, "v2", [FLIPS]).values()
    assert change.diff.value == pytest.approx((75 - 15) / 318 * 1000) and change.verdict == "worse"
    assert change.diff.ci is not None and change.diff.ci.low > 0 and change.significant
    f1 = baselines.version_changes(store, "v2", ["attribute.per_class.wrong.f1"])[
        "attribute.per_class.wrong.f1"
    ]
    assert f1.verdict == "worse"  # lower F1 is worse: never shown as better


# -- alert rules with significance ------------------------------------------------------------------
def _rules(**extra) -> dict:
    rule = {"name": "flips-rise", "metric": FLIPS, "rise_vs_baseline": 5.0, "baseline": "reference", **extra}
    return {"rule": [rule]}


def test_significance_fires_only_when_the_runs_interval_excludes_the_baseline(store, make_report):
    """The reference (v2 pooled) is 75/318 = 235.8 flips per 1,000; v3's run must rise above it by 5."""
    plain, strict = parse_config(_rules()), parse_config(_rules(significance=True))
    near = make_report(job=8, model_version="v3", cm=((18, 27), (3, 58)))  # 27/106: 254.7, CI 175-349
    far = make_report(job=9, model_version="v3", cm=((5, 40), (3, 58)))  # 40/106: 377.4, CI 285-477
    for report, fires_plain, fires_strict in ((near, True, False), (far, True, True)):
        compared = baselines.for_report(store, report, [FLIPS], 5)
        assert bool(fired_alerts(report, plain, compared)) is fires_plain
        assert bool(fired_alerts(report, strict, compared)) is fires_strict
    [alert] = record_and_queue(store, far, strict, [])[0]
    assert alert.baseline == pytest.approx(75 / 318 * 1000) and alert.value_ci[0] > alert.baseline
    assert alert.baseline_label == "reference v2 (previous version; 3 jobs pooled, unpaired)"
    assert "; vs reference v2 (previous version; 3 jobs pooled, unpaired): 235.8 [95% CI " in alert.message
    assert alert.message.endswith(", worse")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"significance": True, "metric": "detection.ap"}, "significance needs a per-run interval"),
        ({"metric": "errors.missed"}, "baseline = 'reference' needs a metric the history keeps per run"),
        ({"baseline": "yesterday"}, "baseline must be one of reference, own"),
        ({"significance": "yes"}, "significance"),
    ],
)
def test_bad_significance_or_baseline_settings_are_refused(extra, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_rules(**extra), "rules.toml")


# -- registering a paired backtest, and pinning a reference, from the command line ----------------------
def test_registered_backtest_shows_beside_the_pooled_comparison(store, tmp_path, capsys):
    path = tmp_path / "backtest.json"
    diffs = {"flips_per_1000": {"estimate": 40.0, "low": 30.0, "high": 52.0}}
    path.write_text(
        json.dumps(
            {
                "data": {"n_persons": 2630},
                "pairs": [{"a": "v1", "b": "v2", "mcnemar_p": 0.002, "diffs": diffs}],
            }
        )
    )
    db = str(tmp_path / "h.sqlite")
    assert main(["baseline", "add-backtest", str(path), "--db", db]) == 0
    assert "registered the paired backtest of v2 against v1" in capsys.readouterr().out
    compared = baselines.comparisons(store, "v2", [FLIPS])
    paired = compared.paired[FLIPS]
    assert (paired.estimate, paired.ci.low, paired.ci.high, paired.mcnemar_p) == (40.0, 30.0, 52.0, 0.002)
    # the run page (and report.html) shows it under the pooled comparison
    from ropewatch_validator.render import html

    [report] = store.reports([store.trend(model_version="v2")[0]["id"]])
    page = html.report_page(report, comparisons=baselines.comparisons(store, "v2", html.kpi_metrics(report)))
    card = page.split('data-kpi="flips_per_1000"', 1)[1].split('data-kpi="det_precision"', 1)[0]
    assert "paired backtest +40.0 [95% CI 30.0–52.0], McNemar p 0.002" in card
    bad = tmp_path / "not-a-backtest.json"
    bad.write_text('{"versions": []}')
    assert main(["baseline", "add-backtest", str(bad), "--db", db]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not-a-backtest.json: not a backtest result (pairs: Field required)" in err[0]


def test_baseline_reference_pins_and_unpins(store, tmp_path, make_report, capsys):
    db = str(tmp_path / "h.sqlite")
    store.record_run(make_report(job=7, model_version="v3"))
    assert main(["baseline", "reference", "v3", "v1", "--db", db]) == 0
    assert baselines.reference_of(store, "v3") == ("v1", "pinned reference")
    assert main(["baseline", "reference", "v3", "--previous", "--db", db]) == 0
    assert baselines.reference_of(store, "v3") == ("v2", "previous version")
    assert main(["baseline", "reference", "v3", "v3", "--db", db]) == 2
    assert "cannot be its own reference" in capsys.readouterr().err


def test_own_baseline_of_a_metric_no_column_holds_comes_from_the_stored_reports(store, make_report):
    """A drop/rise rule on one pair's flips or an error count still has a drift baseline: the median
    over the version's earlier stored reports (v2: 20, 25, 30 flips of 106 persons)."""
    config = parse_config(
        {"rule": [{"name": "pair", "metric": "flips_wrong_to_correct_per_1000", "rise_vs_baseline": 10}]}
    )
    worse = make_report(job=10, model_version="v2", cm=((5, 40), (3, 58)))
    [alert] = record_and_queue(store, worse, config, [])[0]
    assert alert.baseline == pytest.approx(25 / 106 * 1000) and alert.value == pytest.approx(40 / 106 * 1000)
    assert alert.baseline_label == "own earlier runs of v2 (median of its first 3 earlier runs; drift)"


def test_a_runs_f1_interval_is_the_bootstrap_of_its_persons(make_report):
    """Oracle: resample the run's 106 persons themselves (their (reference, prediction) pairs) with
    replacement and take the 2.5% / 97.5% percentiles of F1(wrong), computed with sklearn."""
    from sklearn.metrics import f1_score

    report = make_report(cm=((40, 5), (3, 52)))
    ci = baselines.run_interval(report, "attribute.per_class.wrong.f1")
    truth = np.array([0] * 45 + [1] * 55)
    pred = np.array([0] * 40 + [1] * 5 + [0] * 3 + [1] * 52)
    rng = np.random.default_rng(12345)  # another stream than the code's
    draws = [rng.integers(0, len(truth), len(truth)) for _ in range(2000)]
    oracle = np.percentile([f1_score(truth[i], pred[i], pos_label=0) for i in draws], [2.5, 97.5])
    assert ci is not None and ci.low < report.attribute.per_class["wrong"].f1 < ci.high
    assert (ci.low, ci.high) == pytest.approx(tuple(oracle), abs=0.01)


def test_a_change_inside_the_noise_says_so(store, make_report):
    """v3's one run with 40 flips of 106 against v2 pooled (75 of 318 persons): worse, and its value
    lies outside v2's interval; a run at v2's own rate reads as inside it."""
    from ropewatch_validator.render import html

    for wc, inside in ((40, False), (25, True)):
        report = make_report(job=20 + wc, model_version="v3", cm=((45 - wc, wc), (3, 55 - wc)))
        page = html.report_page(
            report, comparisons=baselines.for_report(store, report, html.kpi_metrics(report), 5)
        )
        card = page.split('data-kpi="flips_per_1000"', 1)[1].split('data-compare="own"', 1)[0]
        assert ("(inside its interval)" in card) is inside
