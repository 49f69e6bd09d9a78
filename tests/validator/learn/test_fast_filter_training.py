"""Fast filter training, resume, calibration and evaluation on generated crops (CPU, one thread).

Training budget (2-core CI box, shared): 800 + 200 crops of 40x64 px at 48 px input, timm's
``test_resnet``, 4 epochs: about 12 s of CPU (3 s per epoch); val AUC reaches 0.96-1.0 from epoch 2.
"""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ropewatch_core.model.checkpoint import read_checkpoint, save_checkpoint
from ropewatch_core.model.fast_filter import load_filter
from ropewatch_validator.cli.main import main as ropewatch
from ropewatch_validator.learn import data as fd
from support.crops import write_dataset

TRAIN = ["--model-name", "test_resnet", "--img-size", "48", "--batch-size", "32", "--lr", "3e-3"]
TRAIN += ["--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    data, out = tmp_path_factory.mktemp("crops"), tmp_path_factory.mktemp("run")
    write_dataset(data, 800, 200, seed=0)
    t0 = time.process_time()
    code = ropewatch(
        ["train", "fast-filter", "--data-dir", str(data), "--epochs", "4", "--output-dir", str(out), *TRAIN]
    )
    cpu = time.process_time() - t0
    assert code == 0
    return data, out, cpu


def test_training_learns_to_val_auc_095(trained, capsys):
    data, out, cpu = trained
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    for h in history:
        assert set(h) >= {
            "train_loss",
            "val_loss",
            "val_accuracy",
            "val_auc",
            "val_f1_wrong",
            "val_f1_correct",
        }
    best = max(history, key=lambda h: h["val_auc"])
    assert best["val_auc"] >= 0.95, history
    print(f"training: 4 epochs, {cpu:.1f} s CPU, best val AUC {best['val_auc']:.4f}")
    raw, _ = read_checkpoint(out / "best.pt")
    assert raw["epoch"] == best["epoch"] and raw["metrics"]["val"]["auc"] == pytest.approx(best["val_auc"])
    # the saved AUC is the Mann-Whitney AUC of the saved model's logits: check with scikit-learn
    filt = load_filter(out / "best.pt")
    rows = fd.read_manifest(data, "val")
    z = fd.score(filt.model, data, rows, filt.img_size)
    assert roc_auc_score(fd.labels(rows), z) == pytest.approx(best["val_auc"], abs=1e-9)


def test_resume_continues_from_the_saved_epoch(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_dataset(data, 64, 32, seed=1)
    args = ["train", "fast-filter", "--data-dir", str(data), *TRAIN, "--img-size", "24", "--epochs", "3"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    assert ropewatch([*args, "--output-dir", str(whole)]) == 0
    real_metrics, calls = fd.metrics, []

    def killed_in_epoch_3(*a, **k):  # the run dies during epoch 3, after epoch 2 was saved
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_metrics(*a, **k)

    monkeypatch.setattr(fd, "metrics", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        ropewatch([*args, "--output-dir", str(split)])
    monkeypatch.setattr(fd, "metrics", real_metrics)
    assert torch.load(split / "last.pt", weights_only=True)["epoch"] == 2  # loadable the safe way
    assert ropewatch([*args, "--output-dir", str(split), "--resume"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (split / "history.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]  # epochs 1-2 not trained again
    a = torch.load(whole / "last.pt", weights_only=True)
    b = torch.load(split / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    # model, optimizer, schedule and both RNG streams (shuffle, augmentation) restored: identical weights
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    # resuming a finished run trains nothing
    assert ropewatch([*args, "--output-dir", str(split), "--resume"]) == 0
    assert len((split / "history.jsonl").read_text().splitlines()) == 3


def _noisy_copy(data, dest, flip_every: int):
    """The same crops with every ``flip_every``-th validation label flipped: never separable, so the
    NLL-optimal temperature is finite."""
    dest.mkdir()
    (dest / "crops").symlink_to(data / "crops")
    rows = list(csv.DictReader((data / "val_manifest.csv").open()))
    for i, row in enumerate(rows):
        if i % flip_every == 0:
            row["y"] = str(1 - int(row["y"]))
    fd.write_manifest(dest / "val_manifest.csv", rows)
    shutil.copy(data / "train_manifest.csv", dest / "train_manifest.csv")


def test_temperature_scaling_fixes_an_over_confident_filter(trained, tmp_path, capsys):
    data, out, _ = trained
    noisy = tmp_path / "noisy"
    _noisy_copy(data, noisy, flip_every=10)
    raw, _ = read_checkpoint(out / "best.pt")
    fc = raw["state_dict"]
    fc["fc.weight"], fc["fc.bias"] = fc["fc.weight"] * 6, fc["fc.bias"] * 6  # logits x6: over-confident
    loud = tmp_path / "loud.pt"
    save_checkpoint(raw, loud)
    assert ropewatch(["calibrate", str(loud), "--data-dir", str(noisy), "-o", str(tmp_path / "cal.pt")]) == 0
    printed = capsys.readouterr().out
    new, _ = read_checkpoint(tmp_path / "cal.pt")
    c = new["calibration"]
    assert c["ece_after"] < c["ece_before"] and c["nll_after"] < c["nll_before"]
    assert new["temperature"] > 1.0 and load_filter(tmp_path / "cal.pt").temperature == new["temperature"]
    assert (tmp_path / "cal.reliability.png").stat().st_size > 0 and "temperature" in printed
    # oracle: NLL of sigmoid(z/T) on a fine grid of T, written out here (log(1 + e^-x), stable form)
    rows = fd.read_manifest(noisy, "val")
    z, y = fd.score(load_filter(loud).model, noisy, rows, 48), fd.labels(rows)
    grid = np.exp(np.linspace(np.log(0.05), np.log(50), 20001))
    signed = np.where(y == 1, z, -z)[None, :] / grid[:, None]
    nll = np.mean(np.logaddexp(0.0, -signed), axis=1)
    t_oracle = grid[np.argmin(nll)]
    assert new["temperature"] == pytest.approx(t_oracle, rel=2e-3)


def test_evaluate_writes_json_html_and_figures(trained, tmp_path, capsys):
    data, out, _ = trained
    report = tmp_path / "eval"
    assert (
        ropewatch(["evaluate", str(out / "best.pt"), "--data-dir", str(data), "--output-dir", str(report)])
        == 0
    )
    result = json.loads((report / "evaluation.json").read_text())
    m = result["metrics"]
    filt = load_filter(out / "best.pt")
    rows = fd.read_manifest(data, "val")
    z, y = fd.score(filt.model, data, rows, filt.img_size), fd.labels(rows)
    pred = (1 / (1 + np.exp(-z / filt.temperature)) >= 0.5).astype(int)
    assert m["auc"] == pytest.approx(roc_auc_score(y, z), abs=1e-9)
    assert m["confusion"] == [[int(np.sum((y == t) & (pred == q))) for q in (0, 1)] for t in (0, 1)]
    assert m["accuracy"] == pytest.approx(np.mean(pred == y)) and m["n"] == 200
    assert set(m) >= {"f1_wrong", "f1_correct", "ece"} and result["roc"]["fpr"][0] == 0.0
    assert result["roc"]["fpr"][-1] == 1.0 and result["roc"]["tpr"][-1] == 1.0
    html = (report / "evaluation.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and filt.version in html
    assert (report / "roc.png").stat().st_size > 0 and (report / "reliability.png").stat().st_size > 0


def test_training_refuses_bad_input_in_one_line(tmp_path, capsys):
    assert (
        ropewatch(["train", "fast-filter", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train_manifest.csv: no such manifest" in err
    assert ropewatch(["calibrate", str(tmp_path / "none.pt"), "--data-dir", str(tmp_path)]) == 2
    assert "no such file" in capsys.readouterr().err


class _RunsACommand:
    """Unpickled unsafely, this writes a marker file: what a crafted last.pt could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path(self.marker).write_text, ("ran",))


def test_resume_loads_last_pt_safely_and_refuses_a_bad_one_in_one_line(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    write_dataset(data, 16, 8, seed=2)
    out.mkdir()
    args = ["train", "fast-filter", "--data-dir", str(data), *TRAIN, "--img-size", "24", "--epochs", "1"]
    marker = tmp_path / "marker"
    torch.save({"model": _RunsACommand(marker)}, out / "last.pt")
    capsys.readouterr()
    assert ropewatch([*args, "--output-dir", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert not marker.exists() and err.count("\n") == 1 and "last.pt" in err and "Traceback" not in err
    torch.save({"epoch": 1, "model": {}}, out / "last.pt")  # readable, but not a training state
    assert ropewatch([*args, "--output-dir", str(out), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a training state to resume from (missing best, img_size" in err
    assert not (out / "history.jsonl").exists()


def test_one_class_is_refused_before_anything_is_trained(tmp_path, capsys):
    data, out = tmp_path / "data", tmp_path / "out"
    write_dataset(data, 16, 8, seed=3)
    rows = list(csv.DictReader((data / "val_manifest.csv").open()))
    fd.write_manifest(data / "val_manifest.csv", [{**r, "y": "1"} for r in rows])
    args = ["train", "fast-filter", "--data-dir", str(data), *TRAIN, "--output-dir", str(out)]
    assert ropewatch(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "all 8 crops are correct; training needs both classes" in err
    assert not out.exists()


def test_a_kill_between_history_and_checkpoint_never_repeats_an_epoch(tmp_path, monkeypatch):
    import ropewatch_core.files

    data = tmp_path / "data"
    write_dataset(data, 32, 16, seed=4)
    args = ["train", "fast-filter", "--data-dir", str(data), *TRAIN, "--img-size", "24"]
    out = tmp_path / "out"

    def epochs() -> list[int]:
        return [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()]

    # the history one epoch ahead of last.pt (a kill after the history row, before the checkpoint)
    assert ropewatch([*args, "--epochs", "1", "--output-dir", str(out)]) == 0
    shutil.copy(out / "last.pt", tmp_path / "last-epoch1.pt")
    assert ropewatch([*args, "--epochs", "2", "--output-dir", str(out), "--resume"]) == 0
    shutil.copy(tmp_path / "last-epoch1.pt", out / "last.pt")
    assert ropewatch([*args, "--epochs", "2", "--output-dir", str(out), "--resume"]) == 0
    assert epochs() == [1, 2]
    # last.pt one epoch ahead of the history (a kill after the checkpoint, before the history row)
    real, writes = ropewatch_core.files.atomic_write, []

    def killed_writing_history(path, *a, **k):
        writes.append(Path(path).name)
        if writes.count("history.jsonl") == 2:  # the first is the resume's rewrite, the second epoch 3's
            raise KeyboardInterrupt
        return real(path, *a, **k)

    monkeypatch.setattr(ropewatch_core.files, "atomic_write", killed_writing_history)
    with pytest.raises(KeyboardInterrupt):
        ropewatch([*args, "--epochs", "3", "--output-dir", str(out), "--resume"])
    monkeypatch.setattr(ropewatch_core.files, "atomic_write", real)
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 3 and epochs() == [1, 2]
    assert ropewatch([*args, "--epochs", "3", "--output-dir", str(out), "--resume"]) == 0  # nothing to train
    assert epochs() == [1, 2, 3]  # epoch 3's row restored from last.pt
    assert ropewatch([*args, "--epochs", "4", "--output-dir", str(out), "--resume"]) == 0
    assert epochs() == [1, 2, 3, 4]


def test_calibrate_refuses_a_temperature_that_does_not_lower_the_nll(trained, tmp_path, capsys):
    data, out, _ = trained
    noisy = tmp_path / "noisy"
    _noisy_copy(data, noisy, flip_every=10)
    once, twice = tmp_path / "once.pt", tmp_path / "twice.pt"
    assert ropewatch(["calibrate", str(out / "best.pt"), "--data-dir", str(noisy), "-o", str(once)]) == 0
    capsys.readouterr()
    # calibrated already on these crops: the refit finds no lower NLL
    assert ropewatch(["calibrate", str(once), "--data-dir", str(noisy), "-o", str(twice)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not lower the NLL" in err and "nothing written" in err
    assert not twice.exists() and not twice.with_suffix(".reliability.png").exists()
    # constant logits (a dead head): no temperature means anything, the file is left as it was
    raw, _ = read_checkpoint(out / "best.pt")
    raw["state_dict"]["fc.weight"] = torch.zeros_like(raw["state_dict"]["fc.weight"])
    raw["state_dict"]["fc.bias"] = torch.zeros_like(raw["state_dict"]["fc.bias"])
    dead = tmp_path / "dead.pt"
    save_checkpoint(raw, dead)
    before = dead.read_bytes()
    assert ropewatch(["calibrate", str(dead), "--data-dir", str(noisy)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the same logit" in err and dead.read_bytes() == before


def test_a_temperature_that_worsens_the_ece_is_stored_with_a_warning():
    from ropewatch_validator.trace.calibration import fit_temperature, judge_temperature

    # 12 crops where the NLL-optimal T (about 2.2) spreads the probabilities into worse-calibrated bins
    z = np.array([0.0, 1.3, -0.2, -2.7, 1.9, 0.1, -2.0, -3.4, 0.4, 0.7, 2.6, -0.8])
    y = np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1])
    t = fit_temperature(z, y)
    figures, warnings = judge_temperature(z, y, 1.0, t)

    def nll(temp):  # oracle: mean log(1 + e^-(±z/T)), written out
        return float(np.mean(np.logaddexp(0.0, -np.where(y == 1, z, -z) / temp)))

    def ece(temp):  # oracle: top-label ECE over 15 equal bins of the confidence, by loops
        p = 1 / (1 + np.exp(-z / temp))
        conf, hit = np.maximum(p, 1 - p), (p >= 0.5) == (y == 1)
        total = 0.0
        for k in range(15):
            lo, hi = k / 15, (k + 1) / 15
            inside = (conf > lo) & (conf <= hi)
            if inside.any():
                total += inside.sum() / len(z) * abs(conf[inside].mean() - hit[inside].mean())
        return total

    assert figures["nll_after"] == pytest.approx(nll(t)) and figures["nll_before"] == pytest.approx(nll(1.0))
    assert figures["nll_after"] < figures["nll_before"]
    assert figures["ece_after"] == pytest.approx(ece(t)) and figures["ece_before"] == pytest.approx(ece(1.0))
    assert figures["ece_after"] > figures["ece_before"]
    assert len(warnings) == 1 and warnings[0].startswith("ECE gets worse")
    from ropewatch_core.errors import Rejected

    with pytest.raises(Rejected, match="does not lower the NLL"):
        judge_temperature(z, y, t, t)
