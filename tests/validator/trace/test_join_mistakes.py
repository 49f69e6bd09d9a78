"""The most-confident-mistakes panel: crop geometry, ranking, and a frame that cannot be downloaded."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
from PIL import Image

from ropewatch_validator.render.thumbs import crop_png, with_crops
from ropewatch_validator.trace.model import Mistake
from ropewatch_validator.trace.section import confident_mistakes


def _decode(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def _png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def test_crop_is_the_region_around_the_box_with_the_box_drawn() -> None:
    rgb = np.random.default_rng(0).integers(0, 200, (150, 200, 3), dtype=np.uint8)
    crop = _decode(crop_png(rgb, [40, 30, 100, 90], margin=0.5, max_side=500))
    # box 60x60, half of it on each side: x 10..130, y 0..120 (clipped at the top edge)
    assert crop.shape == (120, 120, 3)
    inside = crop[35:85, 35:85]  # well inside the drawn outline (box at x 30..90, y 30..90 in the crop)
    assert np.array_equal(inside, rgb[35:85, 45:95])
    assert np.array_equal(crop[:25, :25], rgb[:25, 10:35])  # the margin is the frame around the box
    assert np.array_equal(crop[60, 30], [255, 0, 0]) and np.array_equal(crop[30, 60], [255, 0, 0])
    small = _decode(crop_png(rgb, [40, 30, 100, 90]))  # default: thumbnail of at most 160 px
    assert max(small.shape[:2]) <= 160
    edge = _decode(
        crop_png(rgb, [190, 140, 260, 220], margin=0.0, max_side=500)
    )  # box past the frame's corner
    assert edge.shape == (10, 10, 3)


def test_mistakes_ranked_by_confidence_in_the_chosen_value() -> None:
    objects = pd.DataFrame(
        {
            "frame": [1, 2, 3, 4, 5],
            "shape_id": [1, 2, 3, 4, None],
            "state": ["attribute_corrected", "attribute_corrected", "accepted", "geometry_edited", "deleted"],
            "logged_value": ["correct", "wrong", "correct", "correct", "wrong"],
            "final_value": ["wrong", "correct", "correct", "wrong", None],
            "p_correct": [0.7, 0.05, 0.99, 0.9, 0.01],
        }
    )
    top = confident_mistakes(objects, k=2)
    assert top["shape_id"].tolist() == [2, 4]  # 1 - 0.05 = 0.95, then 0.9; never accepted or deleted rows
    assert top["confidence"].tolist() == [0.95, 0.9]


def test_a_frame_that_cannot_be_downloaded_leaves_a_note_not_a_failure() -> None:
    rgb = np.full((40, 60, 3), 128, dtype=np.uint8)
    frames = {1: _png(rgb)}
    asked: list[int] = []

    def fetch(n: int) -> bytes:
        asked.append(n)
        return frames[n]

    mistakes = [
        Mistake(
            frame=frame,
            shape_id=shape,
            state="attribute_corrected",
            final_value="wrong",
            logged_value="correct",
            p_correct=p,
            confidence=p,
            thr=0.5,
            x1=5.0,
            y1=5.0,
            x2=20.0,
            y2=30.0,
        )
        for frame, shape, p in [(1, 1, 0.9), (9, 2, 0.8), (1, 3, 0.7)]
    ]
    rows = with_crops(mistakes, fetch, workers=2)
    assert sorted(asked) == [1, 9]  # one download per frame
    assert [r.shape_id for r in rows] == [1, 2, 3]
    assert rows[0].crop and rows[2].crop and rows[1].crop is None and "KeyError" in (rows[1].crop_error or "")
