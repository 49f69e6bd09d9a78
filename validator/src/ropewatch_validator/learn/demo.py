"""The demo's model files: an untrained expert checkpoint, random-init detector weights and an untrained
fast filter whose band shows both cascade stages (`ropewatch demo`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def write_demo_models(workdir: Path) -> tuple[Path, Path]:
    """``rope-demo.pt`` (the real architecture, untrained) and ``person-demo.pth`` in ``workdir``."""
    from ropewatch_core.model.checkpoint import demo_checkpoint, save_checkpoint
    from ropewatch_core.model.detector import write_demo_weights

    model_path, detector_path = workdir / "rope-demo.pt", workdir / "person-demo.pth"
    save_checkpoint(demo_checkpoint(), model_path)
    write_demo_weights(detector_path)
    return model_path, detector_path


def write_demo_filter(path: Path, frame: bytes, boxes: Sequence[Sequence[float]]) -> None:
    """An untrained fast filter (the plan's mobilenetv4_hybrid_medium at 256 px) whose band is set from
    its own P on the demo persons, so that the one with the highest P is decided by the filter and the
    others deferred to the expert: the demo shows both stages. A real band comes from `cascade tune`."""
    import numpy as np
    import torch

    from ropewatch_core.image import load_frame
    from ropewatch_core.model.checkpoint import read_checkpoint, save_checkpoint
    from ropewatch_core.model.fast_filter import build_model, load_filter, new_checkpoint

    torch.manual_seed(0)
    name = "mobilenetv4_hybrid_medium"
    save_checkpoint(new_checkpoint(build_model(name), name, 256, version="filter-demo-untrained"), path)
    _, p = load_filter(path).p_correct(load_frame(frame).rgb, np.array(boxes))
    ckpt, _ = read_checkpoint(path)
    ckpt["band"] = [0.0, float(max(p))]  # the higher P is decided `correct`, the lower one deferred
    save_checkpoint(ckpt, path)
