"""The team's own checkpoints (issue 17.0): the seed card's Config block loads and is kept, labels/thr/
version may sit in config, old files without thr are judged but never served, and `checkpoint import`
turns a foreign state dict into one the Nuclio handler serves."""

from __future__ import annotations

import json
import math

import pytest
import torch

from ropewatch_core.model.checkpoint import TRAINING_KEYS, CheckpointError, load_checkpoint, save_checkpoint
from ropewatch_core.model.classifier import ModelConfig, RopeClassifier, prepare
from ropewatch_validator.cli.main import main as ropewatch
from support.handler import body_of, jpeg
from support.paths import DATA

SEED_CONFIG = json.loads((DATA / "seed_config.json").read_text(encoding="utf-8"))
# the seed's architecture at the demo's test size (one block, small head): fast on a CPU, same code path
TINY = {"img_size": [64, 48], "backbone_kwargs": {"depth": 1}, "head_width": 16, "roi_size": 3}
RENAMES = {"backbone.": "encoder.", "head.": "classifier."}


def seed_config() -> dict:
    """The seed card's Config block verbatim, at the tiny size."""
    return {**json.loads(json.dumps(SEED_CONFIG)), **TINY}


def seed_model(seed: int = 0) -> RopeClassifier:
    cfg = seed_config()
    torch.manual_seed(seed)
    model_cfg = ModelConfig(**{k: v for k, v in cfg.items() if k in ModelConfig.__dataclass_fields__})
    return RopeClassifier(model_cfg, len(cfg["labels"])).eval()


def seedlike(model: RopeClassifier, foreign: bool) -> dict:
    """What the team's trainer saves: the weights (renamed when ``foreign``) and the Config block."""
    state = model.state_dict()
    if foreign:
        for old, new in RENAMES.items():
            state = {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}
        return {"model_state_dict": state, "config": seed_config(), "epoch": 2}
    return {"state_dict": state, "config": seed_config()}


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_seed_config_block_loads_and_keeps_the_training_metadata(tmp_path, capsys):
    path = tmp_path / "seedlike.pt"
    save_checkpoint(seedlike(seed_model(), foreign=False), path)
    ckpt = load_checkpoint(path)
    assert (ckpt.version, ckpt.labels, ckpt.thr, ckpt.thr_source) == (
        "v20260512",
        ["wrong", "correct"],
        0.054290771484375,
        "checkpoint",
    )
    metadata = {k: v for k, v in SEED_CONFIG.items() if k in TRAINING_KEYS}
    assert ckpt.training == metadata and set(SEED_CONFIG) - set(metadata) <= {
        *ModelConfig.__dataclass_fields__,
        "labels",
        "thr",
        "version",
    }
    assert ropewatch(["checkpoint", "inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["training"]["test_metrics"]["tp"] == 927 and info["training"]["best_epoch"] == 2
    assert info["training"]["arch"] == SEED_CONFIG["arch"] and info["thr"] == 0.054290771484375
    assert ropewatch(["checkpoint", "inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "training.best_val_AP   0.9318118478968604" in text and "training.hyperparams" in text


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda c: c.update(thr=0.5), "'thr' is 0.5 at the top level but 0.054290771484375 in config"),
        (lambda c: c.update(labels=["correct", "wrong"]), "'labels' is ['correct', 'wrong'] at the top"),
        (lambda c: c.update(version="v9"), "'version' is v9 at the top level but v20260512 in config"),
        (lambda c: c["config"].update(colour="red"), "unknown config keys ['colour']"),
        (lambda c: c["config"].pop("thr"), "missing 'thr'"),
    ],
)
def test_conflicts_unknown_keys_and_missing_thr_are_one_line(change, expected, tmp_path, capsys):
    ckpt = seedlike(seed_model(), foreign=False)
    change(ckpt)
    path = tmp_path / "bad.pt"
    save_checkpoint(ckpt, path)
    with pytest.raises(CheckpointError, match=f"checkpoint {path}: "):
        load_checkpoint(path)
    assert ropewatch(["checkpoint", "inspect", str(path)]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"ropewatch checkpoint inspect: checkpoint {path}: ") and expected in line


def test_equal_values_in_both_places_load(tmp_path):
    ckpt = seedlike(seed_model(), foreign=False)
    ckpt.update(thr=SEED_CONFIG["thr"], labels=("wrong", "correct"), version="v20260512")
    path = tmp_path / "both.pt"
    save_checkpoint(ckpt, path)
    assert load_checkpoint(path).thr == SEED_CONFIG["thr"]


def test_old_version_without_thr_is_never_served_but_can_be_judged(tmp_path):
    ckpt = seedlike(seed_model(), foreign=False)
    ckpt["config"].pop("thr")
    path = tmp_path / "v9.pt"
    save_checkpoint(ckpt, path)
    with pytest.raises(CheckpointError, match="missing 'thr'"):
        load_checkpoint(path)  # what the function calls
    judged = load_checkpoint(path, require_thr=False)
    assert math.isnan(judged.thr) and judged.thr_source == "none"
    given = load_checkpoint(path, thr=0.79)
    assert (given.thr, given.thr_source) == (0.79, "--thr")
    with pytest.raises(CheckpointError, match="must be in \\[0, 1\\]"):
        load_checkpoint(path, thr=1.5)


def expected_p_correct(model: RopeClassifier, image: bytes, boxes: list[list[float]]) -> list[float]:
    """The original (un-renamed) model's P(correct) for the boxes, by hand: softmax of its logits."""
    import numpy as np

    from ropewatch_core.image import load_frame

    rgb = load_frame(image).rgb
    x, rois = prepare(rgb, np.array(boxes, dtype=np.float64), model.config, torch.device("cpu"))
    with torch.inference_mode():
        logits = model(x, rois).double()
    return torch.softmax(logits, dim=1)[:, 1].tolist()  # labels ["wrong", "correct"]


def test_import_renamed_seed_checkpoint_then_serve_through_the_handler(tmp_path, capsys, monkeypatch):
    from support.handler import Function

    model = seed_model(seed=3)
    src, out = tmp_path / "foreign.pt", tmp_path / "models" / "rope.pt"
    torch.save(seedlike(model, foreign=True), src)
    maps = [a for old, new in RENAMES.items() for a in ("--map", f"{new}={old}")]
    assert ropewatch(["checkpoint", "import", str(src), str(out), *maps]) == 0
    said = capsys.readouterr().out
    assert f"{out}: imported {len(model.state_dict())} weights" in said and "thr 0.054290771484375" in said
    served = load_checkpoint(out)
    assert served.version == "v20260512" and served.training["epochs_run"] == 10
    monkeypatch.setenv("MODEL_PATH", str(out))
    monkeypatch.delenv("DETECTOR_PATH", raising=False)
    fn = Function(capsys)
    image, boxes = jpeg(), [[10.0, 10.0, 60.0, 90.0], [70.0, 20.0, 150.0, 110.0]]
    wire, (record,) = fn.call(body_of(image, boxes=boxes))
    assert wire["status_code"] == 200
    assert record["model_version"] == "v20260512" and record["thr"] == 0.054290771484375
    assert record["model_sha256"] == served.sha256
    for det, p in zip(record["detections"], expected_p_correct(model, image, boxes), strict=True):
        assert math.isclose(det["p_correct"], p, abs_tol=1e-5)
        assert det["safety_rope_use"] == ("correct" if det["p_correct"] >= 0.054290771484375 else "wrong")


def test_import_options_replace_the_source_and_thr_less_import_is_not_servable(tmp_path, capsys):
    src, out = tmp_path / "v9.pt", tmp_path / "v9-contract.pt"
    raw = seedlike(seed_model(), foreign=True)
    raw["config"].pop("thr")
    torch.save(raw["model_state_dict"], src)  # a bare state dict: config from the options and defaults
    maps = [a for old, new in RENAMES.items() for a in ("--map", f"{new}={old}")]
    args = ["checkpoint", "import", str(src), str(out), *maps, "--labels", "wrong", "correct"]
    assert ropewatch([*args, "--version", "v9"]) == 2  # the bare dict gets the production config
    assert "weights do not fit" in one_error_line(capsys) and not out.exists()
    torch.save({"state_dict": raw["model_state_dict"], "config": raw["config"]}, src)
    assert ropewatch([*args, "--version", "v9"]) == 0
    assert "no thr: the function refuses it" in capsys.readouterr().out
    with pytest.raises(CheckpointError, match="missing 'thr'"):
        load_checkpoint(out)
    assert load_checkpoint(out, thr=0.79).version == "v9"


@pytest.mark.parametrize(
    "maps, expected",
    [
        ([], "'state_dict' has no head weights ('head.3.weight')"),
        (["--map", "classifier.=head."], "weights do not fit vit_small_patch16_dinov3: missing backbone."),
        (["--map", "encoder"], "--map takes OLD=NEW"),
        (["--map", "classifier.1.=z.", "--map", "classifier.3.=z."], "--map sends two weights to"),
    ],
)
def test_import_refusals_are_one_line_and_write_nothing(maps, expected, tmp_path, capsys):
    src, out = tmp_path / "foreign.pt", tmp_path / "out.pt"
    torch.save(seedlike(seed_model(), foreign=True), src)
    assert ropewatch(["checkpoint", "import", str(src), str(out), *maps]) == 2
    assert expected in one_error_line(capsys) and not out.exists()


def test_import_of_something_without_weights_is_one_line(tmp_path, capsys):
    src = tmp_path / "empty.pt"
    torch.save({"config": seed_config()}, src)
    assert ropewatch(["checkpoint", "import", str(src), str(tmp_path / "o.pt")]) == 2
    assert "no state dict found" in one_error_line(capsys)


def test_normalised_moves_labels_thr_version_to_the_top_for_editing(tmp_path):
    from ropewatch_core.model.checkpoint import normalised, validate

    raw = seedlike(seed_model(), foreign=False)
    flat = normalised(raw, "seedlike.pt")
    assert (flat["thr"], flat["labels"], flat["version"]) == (
        SEED_CONFIG["thr"],
        ["wrong", "correct"],
        "v20260512",
    )
    assert not {"thr", "labels", "version"} & set(flat["config"]) and "test_metrics" in flat["config"]
    flat["thr"] = 0.3  # what recalibrate does: the new value is the only one
    validate(flat, "edited.pt")
    save_checkpoint(flat, tmp_path / "edited.pt")
    assert load_checkpoint(tmp_path / "edited.pt").thr == 0.3
