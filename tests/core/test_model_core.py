"""Model core: box expansion, one backbone pass per frame, the decision rule (hand-computed oracles)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ropewatch_core.decision import decide
from ropewatch_core.model.classifier import ModelConfig, RopeClassifier, expand_boxes, prepare


def test_expand_boxes_by_hand():
    out = expand_boxes(np.array([[100, 100, 140, 200]]), {"x": 1.0, "y_top": 0.2, "y_bot": 1.5}, 1000, 1000)
    np.testing.assert_allclose(out, [[80, 80, 160, 350]])
    clipped = expand_boxes(np.array([[0, 10, 20, 30]]), {"x": 1.0, "y_top": 1.0, "y_bot": 1.0}, 25, 40)
    np.testing.assert_allclose(clipped, [[0, 0, 25, 40]])


def test_prepare_scales_boxes_to_model_size():
    cfg = ModelConfig(img_size=(64, 48), expand={"x": 0.0, "y_top": 0.0, "y_bot": 0.0})
    image, boxes = prepare(
        np.zeros((96, 128, 3), np.uint8), np.array([[10.0, 20.0, 50.0, 60.0]]), cfg, torch.device("cpu")
    )
    assert tuple(image.shape) == (1, 3, 48, 64)
    np.testing.assert_allclose(boxes.numpy(), [[5, 10, 25, 30]])


def test_decision_two_labels_sigmoid_of_the_logit_difference():
    z, p, values = decide(np.array([[0.1, 0.3], [1.0, -1.0]]), ["wrong", "correct"], thr=0.5, temperature=2.0)
    np.testing.assert_array_equal(z, [0.3 - 0.1, -2.0])
    np.testing.assert_allclose(p, [1 / (1 + math.exp(-0.1)), 1 / (1 + math.exp(1.0))])
    assert values == ["correct", "wrong"]
    assert decide(np.array([[0.0, 0.0]]), ["wrong", "correct"], thr=0.5)[2] == ["correct"]  # P >= thr
    assert decide(np.array([[0.0, 0.0]]), ["correct", "wrong"], thr=0.51)[2] == ["wrong"]


def test_decision_three_labels_is_the_softmax_of_correct_and_unknown_counts_against_it():
    labels = ["unknown", "correct", "wrong"]
    logits = np.array([[9.0, 0.3, 0.1], [-5.0, 2.0, 1.0], [0.0, 0.0, 0.0]])
    for temperature in (1.0, 2.0, 0.5):
        z, p, values = decide(logits, labels, thr=0.5, temperature=temperature)
        e = np.exp(logits / temperature)
        np.testing.assert_allclose(p, e[:, 1] / e.sum(1), rtol=1e-12)  # the oracle: softmax by hand
        np.testing.assert_allclose(1 / (1 + np.exp(-z / temperature)), p, rtol=1e-12)  # p = σ(z / T)
        # `unknown` is largest in row 0 but never the value: there it is `wrong` (P(correct) small)
        assert values[0] == "wrong" and values[2] == "wrong"  # 1/3 < 0.5
    assert decide(logits, labels, thr=0.5)[2][1] == "correct"  # e^2 / (e^-5 + e^2 + e) > 0.5


def test_real_dinov3_small_one_backbone_pass_for_all_persons():
    torch.manual_seed(0)
    cfg = ModelConfig(img_size=(64, 48), head_width=8, roi_size=2)
    model = RopeClassifier(cfg, 2).eval()
    assert model.backbone.num_features == 384 and model.patch_size == 16
    passes = []  # patch embedding runs once per backbone pass
    model.backbone.patch_embed.register_forward_hook(lambda *_: passes.append(1))
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    boxes = np.array(
        [[0, 0, 20, 30], [10, 5, 40, 40], [30, 10, 60, 45], [5, 5, 15, 15], [40, 0, 64, 48]], float
    )
    with torch.no_grad():
        image, rois = prepare(rgb, boxes, cfg, torch.device("cpu"))
        assert tuple(model.feature_map(image).shape) == (1, 384, 3, 4)
        passes.clear()
        together = model(image, rois)
        assert len(passes) == 1 and tuple(together.shape) == (5, 2)
        alone = torch.cat([model(image, rois[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [(64, 48), (96, 32)])
def test_dynamic_image_size_feature_grid(tiny_config, size):
    cfg = ModelConfig(**{**tiny_config.to_dict(), "img_size": size})
    model = RopeClassifier(cfg, 2).eval()
    with torch.no_grad():
        feats = model.feature_map(torch.rand(1, 3, size[1], size[0]))
    assert tuple(feats.shape) == (1, 384, size[1] // 16, size[0] // 16)
