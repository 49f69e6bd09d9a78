"""Alert rules: thresholds, support, derived flips per 1,000 persons, drops vs baseline, config errors."""

from __future__ import annotations

import pytest

from ropewatch_validator.ops.alerts.rules import (
    AlertConfig,
    ConfigError,
    alert_key,
    fired_alerts,
    load_config,
    record_and_queue,
)
from ropewatch_validator.ops.history import JobState, open_store

RULES = """
baseline_runs = 3
report_url = "https://reports.example/{host}/jobs/{job}/report.html"

[[rule]]
name = "wrong-f1-low"
metric = "attribute.per_class.wrong.f1"
op = "<"
threshold = 0.92
min_support = 30

[[rule]]
name = "wrong-recall-low"
metric = "attribute.per_class.wrong.recall"
op = "<"
threshold = 0.5

[[rule]]
name = "flips"
metric = "flips_wrong_to_correct_per_1000"
op = ">"
threshold = 20
min_support = 50

[[rule]]
name = "wrong-recall-drop"
metric = "attribute.per_class.wrong.recall"
drop_vs_baseline = 0.05
"""


@pytest.fixture
def config(tmp_path) -> AlertConfig:
    path = tmp_path / "rules.toml"
    path.write_text(RULES)
    return load_config(path)


def test_threshold_and_flip_rules_fire_with_hand_computed_values(config, make_report):
    report = make_report(job=5, cm=((40, 5), (3, 52)))  # P(wrong)=40/43, R(wrong)=40/45, 106 persons
    fired = {a.rule: a for a in fired_alerts(report, config)}
    assert set(fired) == {"wrong-f1-low", "flips"}  # recall 0.889 >= 0.5; no baseline -> no drop rule
    p, r = 40 / 43, 40 / 45
    assert fired["wrong-f1-low"].value == pytest.approx(2 * p * r / (p + r))
    assert fired["wrong-f1-low"].support == 45 and fired["wrong-f1-low"].threshold == 0.92
    assert fired["flips"].value == pytest.approx(5 * 1000 / 106)
    alert = fired["flips"]
    assert (alert.job, alert.task, alert.model_version) == (5, 10, "v1")
    assert alert.report_url == "https://reports.example/http://cvat.local:8080/jobs/5/report.html"
    assert alert.key == alert_key(
        JobState("http://cvat.local:8080", 5, report.source.job_updated_date), "flips"
    )
    assert "flips_wrong_to_correct_per_1000 = 47.17" in alert.message


def test_min_support_and_missing_metrics_keep_rules_silent(config, make_report):
    small = make_report(cm=((10, 5), (1, 4)), det=(20, 1, 1))  # wrong support 15 < 30, persons 21 < 50
    assert [a.rule for a in fired_alerts(small, config)] == []
    empty = make_report(cm=((0, 0), (0, 10)))  # no wrong persons: recall/f1 of wrong undefined (None)
    assert [a.rule for a in fired_alerts(empty, config)] == []


def test_drop_vs_baseline_uses_median_of_first_runs(tmp_path, config, make_report):
    store = open_store(str(tmp_path / "h.sqlite"))
    for job, wc in enumerate([5, 4, 6, 5]):  # recall of wrong = (45-wc)/45 -> baseline median 40/45
        fired, created = record_and_queue(
            store, make_report(job=job + 1, cm=((45 - wc, wc), (3, 52))), config, []
        )
        assert created and "wrong-recall-drop" not in [a.rule for a in fired]
    worse = make_report(job=9, cm=((36, 9), (3, 52)))  # recall 36/45: 4/45 = 0.089 below 40/45
    fired = {a.rule: a for a in record_and_queue(store, worse, config, [])[0]}
    drop = fired["wrong-recall-drop"]
    assert drop.baseline == pytest.approx(40 / 45) and drop.value == pytest.approx(36 / 45)
    assert drop.threshold == pytest.approx(40 / 45 - 0.05)
    # the text names the baseline (40/45 = 0.8889) as the baseline, the limit (0.8389) as the limit
    assert "(dropped more than 0.05 below baseline 0.8889: limit 0.8389)" in drop.message
    again, created = record_and_queue(store, worse, config, [])
    assert not created and {a.key for a in again} == {a.key for a in fired.values()}
    store.close()


def test_yaml_rules_file_is_read_too(tmp_path, make_report):
    path = tmp_path / "rules.yaml"
    path.write_text("rule:\n  - {name: f1, metric: detection.f1, op: '<', threshold: 0.99}\n")
    cfg = load_config(path)
    assert [a.rule for a in fired_alerts(make_report(), cfg)] == ["f1"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "[[rule]]\nname='a'\nmetric='detection.f1'\nop='<'\nthreshold=0.5\nfoo=1\n",
            "rule #1: unknown setting",
        ),
        ("[[rule]]\nname='a'\nmetric='detection.f1'\nop='=='\nthreshold=0.5\n", "op must be one of"),
        (
            "[[rule]]\nname='a'\nmetric='detection.f1'\nop='<'\nthreshold=0.5\ndrop_vs_baseline=0.1\n",
            "exactly one",
        ),
        (
            "[[rule]]\nname='a'\nmetric='detection.f1'\nop='<'\nthreshold=1\n"
            "[[rule]]\nname='a'\nmetric='detection.recall'\nop='<'\nthreshold=1\n",
            "names must be unique",
        ),
        (  # a typo in a metric path is refused at load time instead of never firing
            "[[rule]]\nname='a'\nmetric='attribute.per_class.wrong.fl'\nop='<'\nthreshold=1\n",
            r"rule #1 \(a\): 'attribute.per_class.wrong.fl' is not in report.json",
        ),
        ("[[webhook]]\nname='w'\nurl='http://x'\nformat='discord'\n", "format must be one of"),
        ("[[rule]\n", "not valid toml"),
        ("alerts = 1\n", "unknown top-level key"),
    ],
)
def test_bad_rules_files_name_the_file_and_entry(tmp_path, text, message):
    path = tmp_path / "rules.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(path)
    assert str(path) in str(exc.value)


def test_a_rule_added_after_a_job_state_was_stored_fires_on_force(tmp_path, make_report):
    """Issue 9, item 12: the state is stored with no rule firing; a rule added later and checked again
    (validate-job --force) queues its alert, once; alerts that fired before are not queued twice."""
    store = open_store(str(tmp_path / "h.sqlite"))
    report = make_report(job=5, cm=((40, 5), (3, 52)))  # flips per 1,000 = 5 * 1000 / 106 = 47.2
    _, created = record_and_queue(store, report, AlertConfig(), ["hook"])
    assert created and store.pending() == []
    path = tmp_path / "rules.toml"
    path.write_text(
        '[[rule]]\nname = "flips"\nmetric = "flips_wrong_to_correct_per_1000"\nop = ">"\nthreshold = 20\n'
    )
    fired, created = record_and_queue(store, report, load_config(path), ["hook"])
    assert not created and [a.rule for a in fired] == ["flips"]
    assert [(d.alert_key, d.target) for d in store.pending()] == [(fired[0].key, "hook")]
    record_and_queue(store, report, load_config(path), ["hook"])  # a second --force: nothing new
    assert len(store.pending()) == 1
    store.close()
