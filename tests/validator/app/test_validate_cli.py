"""`validate-job` end to end: real HTTP sandbox CVAT, cvat-sdk, reports on disk, history, exit codes."""

from __future__ import annotations

import json

import pytest

from ropewatch_validator.cli.main import main, validate_job_main
from ropewatch_validator.ops.history import open_store
from ropewatch_validator.render.model import Report
from ropewatch_validator.render.report import objects_frame
from ropewatch_validator.sandbox import cvat_model, synthetic
from ropewatch_validator.sandbox import server as sandbox

TOKEN = "pat-very-secret-123"


@pytest.fixture
def cvat(monkeypatch):
    state = sandbox.CvatState(token=TOKEN)
    state.add(synthetic.generate(40, project_id=3))
    gt = synthetic.generate(40, job_id=103, seed=0, p_miss=0, p_extra=0, extras=False)
    gt.job["type"] = "ground_truth"
    media = cvat_model.Media([f"site_{f:06d}.jpg" for f in range(40)], 1280, 720, 40)
    gt.meta = cvat_model.job_meta(media, gt.job, included=[0, 2, 4, 6])  # 40 entries, 36 placeholders
    gt.annotations["shapes"] = [
        s for s in gt.annotations["shapes"] if s["source"] == "manual" and s["frame"] in (0, 2, 4, 6)
    ]
    state.add(gt)
    monkeypatch.setenv("CVAT_ACCESS_TOKEN", TOKEN)
    with sandbox.serve(state) as (url, st):
        yield url, st


def run(url, tmp_path, *extra):
    return main(
        [
            "validate-job",
            "--server-host",
            url,
            "--out",
            str(tmp_path / "out"),
            "--db",
            str(tmp_path / "h.sqlite"),
            *extra,
        ]
    )


def test_writes_every_format_with_the_contract_keys(cvat, tmp_path, capsys):
    url, _ = cvat
    assert run(url, tmp_path, "101") == 0
    out = tmp_path / "out" / "job-101"
    rep = json.loads((out / "report.json").read_text())
    assert rep["schema_version"] == "1.1"
    assert set(rep["detection"]) >= {"tp", "fp", "fn", "precision", "recall", "f1"}
    assert set(rep["attribute"]) >= {
        "name",
        "labels",
        "confusion_matrix",
        "per_class",
        "accuracy",
        "macro_f1",
    }
    assert rep["attribute"]["labels"] == ["wrong", "correct"]
    assert set(rep["attribute"]["per_class"]["wrong"]) == {"precision", "recall", "f1", "support"}
    assert set(rep["errors"]) == {
        "missed",
        "background",
        "localization",
        "duplicate",
        "flip_wrong_to_correct",
        "flip_correct_to_wrong",
        "edited_by_person",
    }
    assert rep["source"]["host"] == url and rep["source"]["job"] == 101 and rep["source"]["task"] == 11
    assert rep["settings"]["iou"] == 0.5 and rep["counts"]["skipped_shapes"]["polygon"] == 1
    page = (out / "report.html").read_text()
    # offline: each worst frame's thumbnail inlined, nothing loaded from elsewhere (no src=http, no <link>)
    assert page.count("data:image/jpeg;base64,") == len(rep["worst_frames"]) == 10
    assert 'src="http' not in page and "<link" not in page and "<script src" not in page
    assert "| **wrong** |" in (out / "report.md").read_text()
    printed = capsys.readouterr()
    assert "person detection" in printed.out and TOKEN not in printed.out + printed.err


def test_history_row_and_idempotent_rerun(cvat, tmp_path):
    url, _ = cvat
    assert run(url, tmp_path, "101") == 0
    assert run(url, tmp_path, "101") == 0  # same job state: stored once
    store = open_store(str(tmp_path / "h.sqlite"))
    assert len(store.trend(job=101)) == 1


def test_unknown_job_exits_2_with_one_line(cvat, tmp_path, capsys):
    url, _ = cvat
    assert run(url, tmp_path, "777") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("job 777" in line and "not found" in line for line in err)


def test_cvat_down_exits_2(tmp_path, capsys):
    assert (
        main(
            [
                "validate-job",
                "1",
                "--server-host",
                "http://127.0.0.1:9",
                "--retries",
                "0",
                "--out",
                str(tmp_path),
                "--db",
                str(tmp_path / "h.sqlite"),
            ]
        )
        == 2
    )
    assert "unreachable" in capsys.readouterr().err


def test_alert_rule_fires_exit_1(cvat, tmp_path, capsys):
    url, _ = cvat
    rules = tmp_path / "rules.toml"
    rules.write_text(
        '[[rule]]\nname = "f1-wrong"\nmetric = "attribute.per_class.wrong.f1"\nop = "<"\nthreshold = 0.999\n'
    )
    assert run(url, tmp_path, "101", "--rules", str(rules)) == 1
    assert "f1-wrong" in capsys.readouterr().err


def test_gt_job_mode_uses_only_gt_frames(cvat, tmp_path):
    url, _ = cvat
    assert run(url, tmp_path, "101", "--gt-job", "auto") == 0
    rep = json.loads((tmp_path / "out" / "job-101" / "report.json").read_text())
    assert rep["source"]["reference_mode"] == "gt-job" and rep["source"]["reference_job"] == 103
    assert set(objects_frame(Report.model_validate(rep))["frame"]) <= {0, 2, 4, 6}
    assert rep["counts"]["frames"] == 4


def test_task_scope_and_console_script_name(cvat, tmp_path):
    url, _ = cvat
    code = validate_job_main(
        [
            "--task",
            "11",
            "--server-host",
            url,
            "--out",
            str(tmp_path / "o"),
            "--db",
            str(tmp_path / "h.sqlite"),
            "--format",
            "json",
            "--quiet",
        ]
    )
    assert code == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["job-101"]  # the GT job is not validated


def test_every_real_dumped_job_validates_without_error(cvat_assets, tmp_path, monkeypatch):
    monkeypatch.delenv("CVAT_ACCESS_TOKEN", raising=False)
    state = sandbox.CvatState()
    sandbox.seed_from_assets(state, cvat_assets)
    with sandbox.serve(state) as (url, _):
        ids = [str(j) for j in sorted(state.annotations)]
        assert run(url, tmp_path, *ids, "--format", "json", "--quiet") == 0
    assert len(list((tmp_path / "out").iterdir())) == len(ids)


def test_demo_validator_step_writes_reports_and_history(tmp_path, monkeypatch):
    from ropewatch_validator.cli.demo import run_validator_demo

    monkeypatch.delenv("CVAT_ACCESS_TOKEN", raising=False)
    assert run_validator_demo(tmp_path) == 0
    rep = json.loads((tmp_path / "reports" / "job-101" / "report.json").read_text())
    assert rep["detection"]["tp"] > 0 and rep["errors"]["flip_wrong_to_correct"] > 0
    assert len(open_store(str(tmp_path / "history.sqlite")).trend(job=101)) == 1


def test_vocabulary_drives_flips_history_and_trend(cvat, tmp_path, capsys, monkeypatch):
    url, _ = cvat
    monkeypatch.setenv("COLUMNS", "250")
    # A third value nobody used and the unsafe value first: every ordered pair is a flip type, every
    # value a class in the report and in history, and the dangerous flips are those of `wrong`.
    assert run(url, tmp_path, "101", "--values", "wrong,correct,unknown") in (0, 1)
    rep = Report.load(tmp_path / "out" / "job-101" / "report.json")
    flips = {k for k in rep.errors.counts() if k.startswith("flip_")}
    assert flips == {
        f"flip_{a}_to_{b}"
        for a in ("wrong", "correct", "unknown")
        for b in ("wrong", "correct", "unknown")
        if a != b
    }
    assert list(rep.attribute.per_class) == ["wrong", "correct", "unknown"]
    assert rep.attribute.per_class["unknown"].support == 0
    expected = rep.errors.flip("wrong", "correct") + rep.errors.flip("wrong", "unknown")
    [row] = open_store(str(tmp_path / "h.sqlite")).trend(job=101)
    assert list(row["classes"]) == ["wrong", "correct", "unknown"]
    assert (row["unsafe_value"], row["dangerous_flips"]) == ("wrong", expected) and expected > 0
    capsys.readouterr()
    assert main(["history", "--db", str(tmp_path / "h.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "F1 unknown" in out and "recall wrong" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--values", "wrong"], "--values takes two or more distinct"),
        (["--values", "wrong,wrong"], "--values takes two or more distinct"),
        (["--values", "a,b,c", "--logs", "-"], "--logs traces the function's two classes"),
    ],
)
def test_unusable_vocabulary_is_one_line_exit_2(cvat, tmp_path, capsys, extra, message):
    url, _ = cvat
    assert run(url, tmp_path, "101", *extra) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
