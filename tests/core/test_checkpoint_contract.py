"""Checkpoint contract: every past failure gives one clear error naming the file; CLI demo/inspect."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from ropewatch_core.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ropewatch_validator.cli.main import main as ropewatch


def broken(base: dict, change) -> dict:
    ckpt = copy.deepcopy(base)
    change(ckpt)
    return ckpt


CASES = {
    "no thr": (lambda c: c.pop("thr"), "missing 'thr'"),
    "no correct label": (lambda c: c.update(labels=["wrong", "ok"]), "lacks 'correct'"),
    "no wrong/correct": (lambda c: c.update(labels=["a", "b"]), "lacks 'wrong', 'correct'"),
    "head size": (
        lambda c: c.update(labels=["unknown", "correct", "wrong"]),
        "head has 2 outputs but 'labels' has 3",
    ),
    "unknown backbone": (
        lambda c: c["config"].update(backbone_name="vit_nonexistent_patch16"),
        "unknown backbone",
    ),
    "shape mismatch": (
        lambda c: c["config"].update(roi_size=4),
        "head.1.weight has shape (16, 3456), model expects (16, 6144)",
    ),
    "feat_ch": (lambda c: c["config"].update(feat_ch=192), "config.feat_ch is 192"),
    "thr range": (lambda c: c.update(thr=1.5), "'thr' must be a number in [0, 1]"),
    "thr bool": (lambda c: c.update(thr=True), "'thr' must be a number"),
    "temperature": (lambda c: c.update(temperature=0.0), "'temperature' must be a positive number"),
    "missing weight": (lambda c: c["state_dict"].pop("backbone.norm.weight"), "missing backbone.norm.weight"),
    "unknown config": (lambda c: c["config"].update(colour="red"), "unknown config keys ['colour']"),
    "img_size": (lambda c: c["config"].update(img_size=[64]), "config.img_size must be [width, height]"),
    "config types": (lambda c: c["config"].update(roi_size="3"), "config cannot build the model"),
    "expand": (lambda c: c["config"].update(expand=[1, 2]), "config.expand must be"),
    "duplicate labels": (lambda c: c.update(labels=["wrong", "wrong"]), "duplicates"),
    # issue 10: files that passed every check above, then failed every request (or escaped as other types)
    "img_size not a patch multiple": (
        lambda c: c["config"].update(img_size=[64, 40]),
        "config.img_size 64x40 is not a multiple of the backbone's patch size 16",
    ),
    "img_size bools": (lambda c: c["config"].update(img_size=[True, True]), "integers in [1, 4096]"),
    "img_size huge": (lambda c: c["config"].update(img_size=[100000, 100000]), "integers in [1, 4096]"),
    "state entry int": (lambda c: c["state_dict"].update({"head.1.bias": 5}), "must be a dict of tensors"),
    "thr 400 digits": (lambda c: c.update(thr=10**400), "'thr' must be a number in [0, 1]"),
    "temperature 400 digits": (lambda c: c.update(temperature=10**400), "'temperature' must be a positive"),
    "backbone_name int": (lambda c: c["config"].update(backbone_name=5), "config.backbone_name must be"),
    "nan weights": (
        lambda c: c["state_dict"]["head.3.bias"].fill_(float("nan")),
        "dry forward pass gave non-finite logits",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_checkpoint_fails_with_one_message_naming_file_and_problem(case, tiny_checkpoint_dict, tmp_path):
    change, expected = CASES[case]
    path = tmp_path / f"{case.replace(' ', '_')}.pt"
    save_checkpoint(broken(tiny_checkpoint_dict, change), path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"checkpoint {path}: ") and expected in message
    assert "\n" not in message and len(message) < len(str(path)) + 320
    assert ropewatch(["checkpoint", "inspect", str(path)]) == 2  # one line, no traceback


def test_corrupt_file_message_is_one_short_line(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint" * 10)  # torch's weights_only error is a multi-line paragraph
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(garbage)
    assert "\n" not in str(err.value) and len(str(err.value)) < len(str(garbage)) + 400


@pytest.mark.parametrize(
    ("size", "expected"),
    [(("0", "10"), "ValueError: Expected a positive image size"), (("320", "180"), "not a multiple")],
)
def test_cli_demo_refuses_sizes_the_function_cannot_serve(size, expected, tmp_path, capsys):
    out = tmp_path / "x.pt"
    assert ropewatch(["checkpoint", "demo", str(out), "--img-size", *size]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0] and not out.exists()


def test_unreadable_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(CheckpointError, match=f"checkpoint {garbage}: not a readable torch checkpoint"):
        load_checkpoint(garbage)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(CheckpointError, match="expected a dict"):
        load_checkpoint(listed)


def test_extra_unknown_label_loads_and_keeps_label_order(fixed_logit_checkpoint, tmp_path):
    path = tmp_path / "three.pt"
    save_checkpoint(
        fixed_logit_checkpoint(labels=("unknown", "correct", "wrong"), bias=(9.0, 0.3, 0.1)), path
    )
    ckpt = load_checkpoint(path)
    assert ckpt.labels == ["unknown", "correct", "wrong"] and ckpt.model.head[3].out_features == 3
    assert ckpt.version == "fixed" and ckpt.untrained is True


def test_version_defaults_to_sha_prefix(tiny_checkpoint_dict, tmp_path):
    path = tmp_path / "nover.pt"
    save_checkpoint(broken(tiny_checkpoint_dict, lambda c: c.pop("version")), path)
    ckpt = load_checkpoint(path)
    assert ckpt.version == f"sha256:{ckpt.sha256[:12]}"


def test_cli_demo_then_inspect(tmp_path, capsys):
    out = tmp_path / "demo.pt"
    assert (
        ropewatch(
            [
                "checkpoint",
                "demo",
                str(out),
                "--img-size",
                "64",
                "48",
                "--labels",
                "unknown",
                "wrong",
                "correct",
                "--thr",
                "0.4",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert ropewatch(["checkpoint", "inspect", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (
        info["labels"] == ["unknown", "wrong", "correct"] and info["thr"] == 0.4 and info["untrained"] is True
    )
    assert (
        info["config"]["img_size"] == [64, 48]
        and info["config"]["backbone_name"] == "vit_small_patch16_dinov3"
    )
    assert info["parameters"] == sum(
        t.numel() for t in torch.load(out, weights_only=True)["state_dict"].values()
    )
    assert ropewatch(["checkpoint", "inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "thr" in text and "0.4" in text and "config.img_size" in text


def test_cli_refuses_bad_input_with_one_line(tmp_path, capsys):
    assert ropewatch(["checkpoint", "demo", str(tmp_path / "x.pt"), "--backbone", "no_such_net"]) == 2
    assert not (tmp_path / "x.pt").exists()
    assert (
        ropewatch(
            ["checkpoint", "demo", str(tmp_path / "y.pt"), "--img-size", "64", "48", "--labels", "a", "b"]
        )
        == 2
    )
    assert not (tmp_path / "y.pt").exists()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    assert ropewatch(["checkpoint", "inspect", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and str(bad) in err[2] and "lacks 'wrong', 'correct'" in err[1]
