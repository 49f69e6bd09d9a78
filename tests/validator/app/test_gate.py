"""`ropewatch gate`: promote (0), reject (1) and every error (2, one line) through the CLI's main, once
through a real subprocess as a pipeline runs it; the rule logic on hand-made paired CIs, and the
values it prints against sklearn and statsmodels."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import f1_score
from statsmodels.stats.contingency_tables import mcnemar

from ropewatch_validator.cli.main import main
from ropewatch_validator.ops.gate import judge, parse_rule
from ropewatch_validator.render.backtest_model import BacktestResult, DiffCI
from support.backtests import two_versions
from support.paths import REPO


def gate(capsys, *args: str) -> tuple[int, list[str], str]:
    rc = main(["gate", *args])
    out, err = capsys.readouterr()
    return rc, out.splitlines(), err


def persons_of(path):
    data = json.loads(path.read_text())
    truth = np.array([p["truth"] for p in data["persons"]])
    return truth, {v: np.array([p["p_correct"][v] for p in data["persons"]]) for v in ("v1", "v2")}


def test_promote_prints_one_pass_line_per_rule_with_values_and_paired_ci(tmp_path, capsys):
    path = two_versions(tmp_path)  # v2 flips far more wrong persons to correct than v1
    rc, lines, err = gate(
        capsys, str(path), "--candidate", "v1", "--baseline", "v2",
        "--rule", "flips_wrong_to_correct_per_1000 not significantly worse",
        "--rule", "attribute.per_class.wrong.f1 ≥ baseline − 0.01",
    )  # fmt: skip
    assert (rc, err) == (0, "")
    truth, p = persons_of(path)
    f1 = {v: f1_score(truth, np.where(p[v] >= 0.5, "correct", "wrong"), pos_label="wrong") for v in p}
    assert lines[0].startswith("PASS flips_wrong_to_correct_per_1000 not significantly worse: candidate ")
    assert "(better; lower is better; McNemar p " in lines[0]
    assert lines[1].startswith(
        "PASS attribute.per_class.wrong.f1 >= baseline - 0.01: "
        f"candidate {f1['v1']:.4f}, baseline {f1['v2']:.4f}, Δ +{f1['v1'] - f1['v2']:.4f} ["
    )
    assert f"(limit {f1['v2'] - 0.01:.4f}; higher is better)" in lines[1]
    assert lines[2] == "promote v1 over v2: 2 of 2 rules pass"


def test_reject_exits_1_with_a_fail_line_per_failed_rule_and_json_says_the_same(tmp_path, capsys):
    path = two_versions(tmp_path)
    rules = tmp_path / "gate.rules"
    rules.write_text(
        "# the team's gate\nflips_per_1000 not significantly worse\n\nap >= baseline - 0.5  # lenient\n"
    )
    args = (str(path), "--candidate", "v2", "--baseline", "v1", "--rules", str(rules))
    rc, lines, err = gate(capsys, *args)
    assert (rc, err) == (1, "")
    assert (
        lines[0].startswith("FAIL flips_per_1000 not significantly worse")
        and "(worse; lower is better" in lines[0]
    )
    assert lines[1].startswith("PASS ap >= baseline - 0.5")
    assert lines[2] == "reject v2 (baseline v1): 1 of 2 rules fail"
    rc, lines, _ = gate(
        capsys, str(path), "--candidate", "v2", "--baseline", "v1", "--rules", str(rules), "--json"
    )
    verdict = json.loads("\n".join(lines))
    assert (
        rc == 1
        and verdict["decision"] == "reject"
        and [r["passed"] for r in verdict["rules"]] == [False, True]
    )
    truth, p = persons_of(path)
    right = {v: (p[v] >= 0.5) == (truth == "correct") for v in p}
    table = [[0, np.sum(right["v1"] & ~right["v2"])], [np.sum(~right["v1"] & right["v2"]), 0]]
    assert verdict["mcnemar_p"] == pytest.approx(mcnemar(table, exact=True).pvalue)
    flips = verdict["rules"][0]
    assert flips["difference"]["low"] > 0 and flips["candidate"] > flips["baseline"]


def test_not_significantly_worse_means_the_ci_excludes_0_on_the_bad_side(tmp_path):
    r = BacktestResult.load(two_versions(tmp_path))
    pair = r.pair("v1", "v2")

    def with_ci(path, low, high):
        diffs = {**pair.diffs, path: DiffCI(estimate=(low + high) / 2, low=low, high=high)}
        return r.model_copy(update={"pairs": [pair.model_copy(update={"diffs": diffs})]})

    not_worse = [parse_rule("flips_per_1000 not significantly worse")]
    better = [parse_rule("per_class.wrong.f1 significantly better")]
    assert judge(
        with_ci("flips_per_1000", -1.0, 4.0), "v2", "v1", not_worse
    ).promote  # worse, not significantly
    assert not judge(with_ci("flips_per_1000", 0.5, 4.0), "v2", "v1", not_worse).promote
    assert judge(with_ci("flips_per_1000", -4.0, -0.5), "v2", "v1", not_worse).promote
    assert not judge(with_ci("per_class.wrong.f1", -0.01, 0.02), "v2", "v1", better).promote
    assert judge(with_ci("per_class.wrong.f1", 0.001, 0.02), "v2", "v1", better).promote
    # the same stored pair read the other way round: v1 against v2 is the negated, swapped CI
    assert not judge(with_ci("flips_per_1000", -4.0, -0.5), "v1", "v2", not_worse).promote


def test_rules_parse_with_margins_limits_and_the_alert_rules_names():
    r = parse_rule("attribute.per_class.wrong.f1 >= baseline - 0.01")
    assert (r.metric, r.kind, r.op, r.value) == (
        "per_class.wrong.f1",
        "vs_baseline",
        ">=",
        pytest.approx(-0.01),
    )
    r = parse_rule("dangerous_flips_per_1000   <= 20")
    assert (r.metric, r.kind, r.op, r.value) == ("flips_per_1000", "absolute", "<=", 20.0)
    assert parse_rule("accuracy > baseline + 1e-3").value == pytest.approx(0.001)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rule", "f1_wrong >= baseline"], "unknown metric 'f1_wrong' (known: per_class.wrong.precision"),
        (["--rule", "accuracy is great"], "rule 'accuracy is great': not understood"),
        (["--rule", "flips_per_1000 >= baseline"], "asks for a higher flips_per_1000, but lower is better"),
        (["--rule", "ap < 0.9"], "asks for a lower ap, but higher is better"),
        (["--rule", "tp not significantly worse"], "no paired CI for tp"),
        ([], "no rule to judge by"),
        (["--rules", "missing.rules"], "cannot read rules file missing.rules"),
    ],
)
def test_errors_exit_2_with_one_line(tmp_path, capsys, args, message):
    path = two_versions(tmp_path)
    rc, lines, err = gate(capsys, str(path), "--candidate", "v2", "--baseline", "v1", *args)
    assert rc == 2 and lines == [] and err.count("\n") == 1 and err.startswith("ropewatch gate: ")
    assert message in err, err


@pytest.mark.parametrize(
    ("setup", "candidate", "message"),
    [
        (lambda d, p: p, "v3", "no version 'v3' in the backtest (it has v1, v2)"),
        (lambda d, p: p, "v1", "the candidate and the baseline are both 'v1'"),
        (lambda d, p: d / "nothing.json", "v2", "cannot read"),
        (
            lambda d, p: (d / "bad.json").write_text("[1, 2]") and d / "bad.json",
            "v2",
            "bad.json: the top level",
        ),
        (
            lambda d, p: (
                (d / "bare.json").write_text(
                    BacktestResult.load(p).model_copy(update={"pairs": [], "persons": []}).to_json()
                )
                and d / "bare.json"
            ),
            "v2",
            "no comparison of v1 and v2 and no per-person scores",
        ),
    ],
)
def test_bad_versions_and_files_exit_2_with_one_line(tmp_path, capsys, setup, candidate, message):
    path = setup(tmp_path, two_versions(tmp_path))
    rc, lines, err = gate(
        capsys,
        str(path),
        "--candidate",
        candidate,
        "--baseline",
        "v1",
        "--rule",
        "flips_per_1000 not significantly worse",
    )
    assert rc == 2 and lines == [] and err.count("\n") == 1 and message in err, err


def test_the_exit_code_works_in_a_pipeline(tmp_path):
    path = two_versions(tmp_path)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "shared/src"), str(REPO / "validator/src")]),
    }
    cmd = [sys.executable, "-m", "ropewatch_validator", "gate", str(path), "--baseline", "v1",
           "--rule", "flips_per_1000 not significantly worse"]  # fmt: skip
    rejected = subprocess.run(
        [*cmd, "--candidate", "v2"], capture_output=True, text=True, env=env, timeout=300
    )
    assert rejected.returncode == 1 and rejected.stdout.splitlines()[-1].startswith("reject v2")
    broken = subprocess.run([*cmd, "--candidate", "v9"], capture_output=True, text=True, env=env, timeout=99)
    assert broken.returncode == 2 and broken.stderr.count("\n") == 1 and "Traceback" not in broken.stderr
