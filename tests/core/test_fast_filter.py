"""Fast filter: checkpoint contract, hot-swap, and the cascade's exactness (counted expert passes)."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
from PIL import Image

from ropewatch_core.cascade import EXPERT, FILTER
from ropewatch_core.model.checkpoint import CheckpointError, save_checkpoint
from ropewatch_core.model.fast_filter import crop_boxes, load_filter
from ropewatch_core.model.pipeline import Predictor


def png(width=160, height=120, seed=0) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def changed(base: dict, change) -> dict:
    ckpt = copy.deepcopy(base)
    change(ckpt)
    return ckpt


def _nan_weights(c: dict) -> None:
    key = next(k for k, v in c["state_dict"].items() if v.is_floating_point() and k.endswith("weight"))
    c["state_dict"][key] = torch.full_like(c["state_dict"][key], float("nan"))


CASES = {
    "no band": (lambda c: c.pop("band"), "missing 'band'"),
    "band order": (lambda c: c.update(band=[0.9, 0.1]), "'band' must be [lo, hi] with 0 <= lo <= hi <= 1"),
    "band range": (lambda c: c.update(band=[-0.1, 0.5]), "'band' must be [lo, hi]"),
    "temperature": (lambda c: c.update(temperature=0), "'temperature' must be a positive number"),
    "img_size": (lambda c: c.update(img_size=True), "'img_size' must be an integer in [8, 1024]"),
    "expand": (lambda c: c.update(expand={"left": 1}), "'expand' must be {x, y_top, y_bot}"),
    "unknown model": (
        lambda c: c.update(model_name="resnet_nonexistent"),
        "unknown model 'resnet_nonexistent'",
    ),
    "other model": (lambda c: c.update(model_name="test_convnext"), "weights do not fit test_convnext"),
    "missing weight": (lambda c: c["state_dict"].pop("fc.weight"), "missing fc.weight"),
    "nan weights": (_nan_weights, "dry forward pass gave a non-finite logit"),
    "state types": (lambda c: c["state_dict"].update(extra=3), "'state_dict' must be a dict of tensors"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_filter_checkpoint_is_one_line_naming_file(case, tiny_filter_dict, tmp_path):
    change, expected = CASES[case]
    path = tmp_path / "filter.pt"
    save_checkpoint(changed(tiny_filter_dict, change), path)
    with pytest.raises(CheckpointError) as err:
        load_filter(path)
    message = str(err.value)
    assert message.startswith(f"filter checkpoint {path}: ") and expected in message, message
    assert "\n" not in message


def test_good_filter_loads_with_its_band_and_temperature(tiny_filter_dict, tmp_path):
    path = tmp_path / "filter.pt"
    save_checkpoint(changed(tiny_filter_dict, lambda c: c.update(temperature=2.5)), path)
    f = load_filter(path)
    assert (f.model_name, f.img_size, f.band, f.temperature, f.version) == (
        "test_resnet",
        32,
        (0.2, 0.8),
        2.5,
        "filter-v1",
    )
    rgb = np.zeros((120, 160, 3), np.uint8)
    z, p = f.p_correct(rgb, np.array([[10.0, 10, 50, 90], [100, 20, 150, 110]]))
    assert z.shape == (2,) and np.allclose(p, 1 / (1 + np.exp(-z / 2.5)))


def test_crop_boxes_expand_round_outward_and_clip():
    # box 40..60 x 20..60 (w 20, h 40); expand x=1 → 10 px each side; y_top .25 → 10 px; y_bot 1.5 → 60 px
    out = crop_boxes(np.array([[40.4, 20.5, 60.2, 60.0]]), {"x": 1.0, "y_top": 0.25, "y_bot": 1.5}, 100, 100)
    # x1 = 40.4 - 9.9 = 30.5 → 30; y1 = 20.5 - 0.25*39.5 = 10.625 → 10; x2 = 60.2 + 9.9 = 70.1 → 71;
    # y2 = 60 + 1.5*39.5 = 119.25 → clipped to 100
    assert out.tolist() == [[30, 10, 71, 100]]


class CountingPredictor(Predictor):
    """The real predictor; counts expert passes and the boxes each one saw."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.expert_boxes: list[list[list[float]]] = []

    def classify(self, ckpt, rgb, boxes):
        self.expert_boxes.append(np.asarray(boxes).tolist())
        return super().classify(ckpt, rgb, boxes)


class FixedFilter:
    """A filter whose P per person is set by the test (the cascade routing is under test here, the
    real filter model is tested above)."""

    def __init__(self, p, band, version="fixed-filter"):
        self.p, self.band, self.version, self.sha256, self.temperature = (
            np.asarray(p),
            band,
            version,
            "x",
            1.0,
        )

    def p_correct(self, rgb, boxes):
        assert len(boxes) == len(self.p)
        return np.log(self.p / (1 - self.p)), self.p


class Static:
    """Stands in for the filter's HotSwap: always this filter."""

    def __init__(self, value):
        self.value = value

    def current(self):
        return self.value


BOXES = [[10.0, 10, 40, 100], [50, 5, 80, 90], [90, 10, 120, 110], [125, 15, 155, 115]]


@pytest.mark.parametrize(
    "p, deferred_ix",
    [
        ([0.95, 0.8, 0.05, 0.2], []),  # at hi = correct, at lo = wrong: nobody deferred
        ([0.95, 0.5, 0.05, 0.79], [1, 3]),
        ([0.5, 0.6, 0.3, 0.21], [0, 1, 2, 3]),
    ],
)
def test_cascade_is_exact_and_counts_expert_passes(tiny_checkpoint, tmp_path, p, deferred_ix):
    predictor = CountingPredictor(str(tiny_checkpoint))
    expert_only = CountingPredictor(str(tiny_checkpoint))
    frame = png()
    reference = expert_only.run(frame, boxes=np.array(BOXES)).detections
    predictor._filter = Static(FixedFilter(p, (0.2, 0.8)))
    result = predictor.run(frame, boxes=np.array(BOXES))
    # one expert pass holding exactly the deferred boxes, or none at all
    assert predictor.expert_boxes == ([[BOXES[i] for i in deferred_ix]] if deferred_ix else [])
    assert result.expert_calls == (1 if deferred_ix else 0)
    for i, det in enumerate(result.detections):
        assert det.p_filter == pytest.approx(p[i])
        if i in deferred_ix:
            assert det.stage == EXPERT and det.value == reference[i].value
            assert det.p_correct == pytest.approx(reference[i].p_correct, abs=1e-6)
            assert det.logit == pytest.approx(reference[i].logit, abs=1e-5)
        else:
            assert det.stage == FILTER and det.value == ("correct" if p[i] >= 0.8 else "wrong")
            assert det.p_correct == pytest.approx(p[i]) and det.shadow is None
        assert det.log_fields()["stage"] == det.stage


def test_shadow_mode_asks_the_expert_about_filter_decided_persons_too(tiny_checkpoint):
    predictor = CountingPredictor(str(tiny_checkpoint), shadow_rate=1.0)
    reference = CountingPredictor(str(tiny_checkpoint)).run(png(), boxes=np.array(BOXES)).detections
    predictor._filter = Static(FixedFilter([0.95, 0.5, 0.05, 0.9], (0.2, 0.8)))
    result = predictor.run(png(), boxes=np.array(BOXES))
    assert predictor.expert_boxes == [BOXES]  # all four, still one pass
    for i in (0, 2, 3):
        det = result.detections[i]
        assert det.stage == FILTER and det.shadow["value"] == reference[i].value
        assert det.shadow["p_correct"] == round(reference[i].p_correct, 6)
    assert result.detections[1].stage == EXPERT and result.detections[1].shadow is None


def test_hot_swap_of_a_broken_filter_keeps_the_old_one(tiny_checkpoint, tiny_filter_dict, tmp_path):
    path = tmp_path / "filter.pt"
    save_checkpoint(tiny_filter_dict, path)
    errors: list[str] = []
    predictor = Predictor(
        str(tiny_checkpoint), filter_path=str(path), on_reload_error=lambda e: errors.append(str(e))
    )
    frame, boxes = png(), np.array(BOXES)
    first = predictor.run(frame, boxes=boxes)
    assert first.fast_filter.version == "filter-v1"
    save_checkpoint(changed(tiny_filter_dict, lambda c: c.update(band=[0.7, 0.3], version="bad")), path)
    for _ in range(2):  # reported once, old filter keeps serving
        again = predictor.run(frame, boxes=boxes)
        assert again.fast_filter.version == "filter-v1"
        assert [d.p_filter for d in again.detections] == [d.p_filter for d in first.detections]
    assert len(errors) == 1 and "'band' must be [lo, hi]" in errors[0] and str(path) in errors[0]
    save_checkpoint(changed(tiny_filter_dict, lambda c: c.update(band=[0.0, 0.0], version="filter-v2")), path)
    swapped = predictor.run(frame, boxes=boxes)
    # band [0, 0]: every P >= hi = 0, so the filter decides everybody correct and the expert is never asked
    assert swapped.fast_filter.version == "filter-v2" and swapped.expert_calls == 0
    assert {d.stage for d in swapped.detections} == {FILTER} and {d.value for d in swapped.detections} == {
        "correct"
    }
