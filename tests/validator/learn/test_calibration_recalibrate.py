"""Recalibration from a traced report: fitted temperature, chosen threshold, calibration block."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import f1_score, recall_score

from ropewatch_core.model.checkpoint import load_checkpoint, save_checkpoint
from ropewatch_core.model.pipeline import Predictor
from ropewatch_validator.cli.main import main
from ropewatch_validator.cli.recalibrate import RecalibrationError, recalibrate
from ropewatch_validator.trace import calibration as cal
from support.reports import build_report, traced_report

_report = traced_report


@pytest.fixture
def traced() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    z_cal = rng.normal(0.8, 2.0, 20000)
    y = (rng.random(z_cal.size) < cal.probability(z_cal)).astype(int)
    return z_cal * 3.0, y  # an over-confident model (true T = 3)


def test_recalibrated_decisions_match_the_chosen_cut(traced) -> None:
    z, y = traced
    ckpt = {"state_dict": {"w": 1}, "labels": ["wrong", "correct"], "thr": 0.5, "version": "v1"}
    new = recalibrate(ckpt, _report(z, y), objective="macro-f1", report_name="r.json")
    assert abs(new["temperature"] - 3.0) / 3.0 < 0.05
    decide = cal.probability(z, new["temperature"]) >= new["thr"]
    m = new["calibration"]["metrics"]
    np.testing.assert_array_equal(decide, z >= m["logit_cut"])
    assert m["macro_f1"] == pytest.approx(f1_score(y, decide.astype(int), average="macro"))
    assert m["ece_after"] < m["ece_before"] and m["nll_after"] < m["nll_before"]
    assert new["calibration"]["previous"] == {"temperature": 1.0, "thr": 0.5, "version": "v1"}
    assert new["version"].startswith("v1+cal")
    assert new["calibration"]["data"]["n"] == z.size and new["state_dict"] is ckpt["state_dict"]
    assert "temperature" not in ckpt  # the input is not modified


def test_recall_objective_meets_the_requirement(traced) -> None:
    z, y = traced
    new = recalibrate(
        {"thr": 0.5, "temperature": 2.0, "version": "v1"},
        _report(z, y),
        objective="recall-wrong",
        required_recall_wrong=0.97,
    )
    pred = (cal.probability(z, new["temperature"]) >= new["thr"]).astype(int)
    assert recall_score(y, pred, pos_label=0) >= 0.97
    assert new["calibration"]["objective"] == "recall-wrong>=0.97"


def test_clear_errors(traced) -> None:
    z, y = traced
    with pytest.raises(RecalibrationError, match="trace.scores"):
        recalibrate({"thr": 0.5}, build_report())  # not traced
    with pytest.raises(RecalibrationError, match="both classes"):
        recalibrate({"thr": 0.5}, _report(z[y == 1], y[y == 1]))
    with pytest.raises(RecalibrationError, match="model version"):
        recalibrate({"thr": 0.5, "version": "v2"}, _report(z, y))
    assert recalibrate({"thr": 0.5, "version": "v2"}, _report(z, y), allow_other_version=True)["thr"] > 0


def _frame_png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def test_cli_recalibrated_checkpoint_loads_in_the_function_and_flips_as_predicted(
    fixed_logit_checkpoint, tmp_path
) -> None:
    # the model's head always says z = 0.8: P = 0.69 >= 0.5 -> "correct" before
    old = tmp_path / "old.pt"
    save_checkpoint(fixed_logit_checkpoint(bias=(0.0, 0.8), thr=0.5, version="fixed"), old)
    rng = np.random.default_rng(5)
    z = np.r_[rng.normal(0.5, 0.4, 500), rng.normal(2.6, 0.4, 500)]  # wrong persons reach z ~ 1.5
    y = np.r_[np.zeros(500, int), np.ones(500, int)]
    report = tmp_path / "report.json"
    report.write_text(_report(z, y, versions=("fixed",)).to_json())
    new = tmp_path / "new.pt"
    assert main(["checkpoint", "recalibrate", str(old), "--from", str(report), "-o", str(new)]) == 0

    ckpt = load_checkpoint(new)
    expected = recalibrate({"thr": 0.5, "version": "fixed"}, _report(z, y, ("fixed",)))
    assert ckpt.temperature == pytest.approx(expected["temperature"]) and ckpt.thr == pytest.approx(
        expected["thr"]
    )
    cut = expected["calibration"]["metrics"]["logit_cut"]
    assert cut > 0.8  # so the decision on z = 0.8 must flip to "wrong"
    box = np.array([[10.0, 8.0, 40.0, 44.0]])
    before = Predictor(str(old)).run(_frame_png(), boxes=box).detections[0]
    after = Predictor(str(new)).run(_frame_png(), boxes=box).detections[0]
    assert before.value == "correct" and after.value == "wrong"
    assert after.logit == pytest.approx(0.8, abs=1e-5)
    assert after.p_correct == pytest.approx(cal.probability(0.8, ckpt.temperature), abs=1e-6)
    assert torch.load(new, weights_only=True)["calibration"]["data"]["n"] == 1000


def test_cli_bad_report_writes_nothing(tiny_checkpoint, tmp_path, capsys) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"source": {}}))
    out = tmp_path / "new.pt"
    assert (
        main(["checkpoint", "recalibrate", str(tiny_checkpoint), "--from", str(report), "-o", str(out)]) == 2
    )
    err = capsys.readouterr().err
    # missing: generated_at, source.host, source.job and the 8 other required blocks = 11 problems
    assert f"--from {report}: not a report.json (generated_at: Field required; 11 problem(s))" in err
    assert not out.exists()
    report.write_text(build_report().to_json())  # a report, but not traced
    assert (
        main(["checkpoint", "recalibrate", str(tiny_checkpoint), "--from", str(report), "-o", str(out)]) == 2
    )
    assert "trace.scores" in capsys.readouterr().err and not out.exists()
    assert (
        main(
            ["checkpoint", "recalibrate", str(tmp_path / "missing.pt"), "--from", str(report), "-o", str(out)]
        )
        == 2
    )
    assert "no such file" in capsys.readouterr().err and not out.exists()
