"""Fast filter training, resume, calibration and evaluation on generated crops (CPU, one thread).

Training budget (2-core CI box, shared): 800 + 200 crops of 40x64 px at 48 px input, timm's
``test_resnet``, 4 epochs: about 12 s of CPU (3 s per epoch); val AUC reaches 0.96-1.0 from epoch 2.
"""

from __future__ import annotations

import csv
import json
import shutil
import time

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ropewatch_core.model.checkpoint import read_checkpoint, save_checkpoint
from ropewatch_core.model.fast_filter import load_filter
from ropewatch_validator.cli import filter_data as fd
from ropewatch_validator.cli.main import main as ropewatch
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
    assert torch.load(split / "last.pt", weights_only=False)["epoch"] == 2
    assert ropewatch([*args, "--output-dir", str(split), "--resume"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (split / "history.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]  # epochs 1-2 not trained again
    a = torch.load(whole / "last.pt", weights_only=False)
    b = torch.load(split / "last.pt", weights_only=False)
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
