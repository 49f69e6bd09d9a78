"""Backtest results for the card and gate tests: two versions on the same persons, frames on disk."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ropewatch_core.jsonio import utc_iso
from ropewatch_validator.render.backtest_model import DataSource, Person, Timing, VersionSpec, assemble

HISTORY = [
    {"ep": 1, "train_loss": 0.4856, "val_AP": 0.8960, "val_F1": 0.8073, "val_acc": 0.8414, "val_thr": 0.255},
    {"ep": 2, "train_loss": 0.1859, "val_AP": 0.9318, "val_F1": 0.8523, "val_acc": 0.8707, "val_thr": 0.114},
]


def two_versions(tmp_path: Path) -> Path:
    """backtest.json of two versions on 300 persons in 100 frames (JPEG files beside it); v2 flips
    many more wrong persons to correct (worse), and its config carries a training history."""
    rng = np.random.default_rng(5)
    n = 300
    truth = np.where(rng.random(n) < 0.4, "correct", "wrong")
    y = truth == "correct"
    p1 = np.where(y, rng.uniform(0.3, 1, n), rng.uniform(0, 0.6, n))
    p2 = np.where(y, rng.uniform(0.3, 1, n), rng.uniform(0, 0.9, n))
    frames_dir = tmp_path / "frames"
    frames_dir.mkdir()
    for f in range(100):
        Image.new("RGB", (320, 240), (40 + f, 90, 120)).save(frames_dir / f"{f:06d}.jpg")
    persons = [
        Person(
            frame=i // 3,
            frame_name=f"{i // 3:06d}.jpg",
            box=[20, 30, 80, 200],
            truth=t,
            p_correct={"v1": a, "v2": b},
        )
        for i, (t, a, b) in enumerate(zip(truth, p1, p2))
    ]
    config = {"version": "v2", "best_val_AP": 0.93, "history": HISTORY}
    specs = [
        VersionSpec(
            version="v1",
            sha256="1" * 64,
            path="v1.pt",
            thr=0.5,
            thr_source="--thr",
            head="Linear(256, 2)",
            timing=Timing(ms_per_frame=755.0, device="cpu", torch_threads=4),
        ),
        VersionSpec(
            version="v2",
            sha256="2" * 64,
            path="v2.pt",
            thr=0.5,
            thr_source="checkpoint",
            labels=["wrong", "correct"],
            config=config,
            timing=Timing(ms_per_frame=54.2, device="cuda:0"),
        ),
    ]
    r = assemble(
        created=utc_iso(),
        source=DataSource(kind="dataset", path="ds"),
        specs=specs,
        persons=persons,
        n_boot=400,
    )
    path = tmp_path / "backtest.json"
    path.write_text(r.to_json(), encoding="utf-8")
    return path
