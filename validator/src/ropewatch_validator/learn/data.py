"""What the fast-filter tools share: the crop manifests, the torch dataset, scoring and the metrics.

A data directory (``ropewatch dataset build`` writes one) holds ``train_manifest.csv`` and
``val_manifest.csv``: one row per person crop with at least ``crop`` (a path relative to the directory)
and ``y`` (1 = ``correct``, 0 = ``wrong``); the builder adds where the crop came from (``task``,
``job``, ``frame``, ``shape_id``, the person box ``x1 y1 x2 y2``, the crop box ``cx1 cy1 cx2 cy2`` and
``frame_file``, the cached frame, which ``cascade tune`` hands to the expert).

The metrics are the validator's own (trace.calibration, evaluation.metrics): AUC (Mann-Whitney), ECE
(top-label, 15 bins), NLL, F1 per class, confusion (rows truth, columns prediction, wrong/correct).
torch is imported inside the functions that need it.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ropewatch_core.errors import InputError

if TYPE_CHECKING:
    import numpy as np


SPLITS = ("train", "val")
MANIFEST_COLUMNS = (
    "crop",
    "y",
    "task",
    "job",
    "frame",
    "shape_id",
    "x1",
    "y1",
    "x2",
    "y2",
    "cx1",
    "cy1",
    "cx2",
    "cy2",
    "frame_file",
)


class DataError(InputError):
    """A data directory or manifest that cannot be used; one line naming the file."""


def manifest_path(data_dir: Path, split: str) -> Path:
    return Path(data_dir) / f"{split}_manifest.csv"


def read_manifest(data_dir: Path, split: str) -> list[dict[str, str]]:
    """Rows of ``{split}_manifest.csv``; every crop must exist and ``y`` must be 0 or 1."""
    path = manifest_path(data_dir, split)
    if not path.is_file():
        raise DataError(f"{path}: no such manifest (run `ropewatch dataset build`)")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows, start=2):
        if row.get("y") not in ("0", "1") or not row.get("crop"):
            raise DataError(
                f"{path}:{i}: need 'crop' and 'y' in {{0, 1}}, got {row.get('crop')!r}, {row.get('y')!r}"
            )
        if not (Path(data_dir) / row["crop"]).is_file():
            raise DataError(f"{path}:{i}: crop file {row['crop']} is missing")
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


def write_manifest(path: Path, rows: list[dict[str, Any]]) -> None:
    """All rows at once, atomically (a killed run leaves the previous manifest or none)."""
    import io

    from ropewatch_core.files import atomic_write

    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=MANIFEST_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, out.getvalue())


def crop_name(job_id: int, frame: int, person: str, frame_bytes: bytes, box: Sequence[int]) -> str:
    """A crop's file name, keyed by what made it: the frame's bytes and the pixel box cut from them (the
    crop rule is in the box), so a rebuild with another rule or frame never reuses a stale crop."""
    import hashlib

    key = hashlib.sha256(frame_bytes + ",".join(str(int(v)) for v in box).encode()).hexdigest()[:16]
    return f"crops/job{job_id}/{frame}_{person}_{key}.png"


def box_problems(boxes: np.ndarray, width: int, height: int) -> list[str | None]:
    """Why each reference box (x1 y1 x2 y2) cannot be cut from a ``width`` x ``height`` frame, or None:
    ``box_empty`` (no area, or not finite), ``box_outside_frame`` (no pixel of it inside the frame).
    Clipping either would make a 1-pixel or edge crop with the person's label: a wrong example."""
    import numpy as np

    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    empty = ~np.isfinite(b).all(axis=1) | (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    outside = (b[:, 2] <= 0) | (b[:, 3] <= 0) | (b[:, 0] >= width) | (b[:, 1] >= height)
    return ["box_empty" if e else "box_outside_frame" if o else None for e, o in zip(empty, outside)]


def labels(rows: list[dict[str, str]]) -> np.ndarray:
    import numpy as np

    return np.array([int(r["y"]) for r in rows], dtype=np.int64)


def transforms(train: bool, mean: Sequence[float], std: Sequence[float]) -> Callable[[Any], Any]:
    """Training: RandomHorizontalFlip, ColorJitter, RandomAffine, GaussianBlur, then Normalize;
    validation and serving: Normalize only (the crop is already resized by fast_filter.to_input)."""
    from torchvision.transforms import v2

    norm = v2.Normalize(mean=list(mean), std=list(std))
    if not train:
        return norm
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
            v2.RandomAffine(degrees=8, translate=(0.06, 0.06), scale=(0.9, 1.1)),
            v2.GaussianBlur(kernel_size=3, sigma=(0.1, 1.0)),
            norm,
        ]
    )


def crop_dataset(
    data_dir: Path, rows: list[dict[str, str]], img_size: int, transform: Callable[[Any], Any]
) -> Any:
    """A torch Dataset of (normalized crop, label) read from the crop files."""
    import numpy as np
    import torch
    from PIL import Image

    from ropewatch_core.model.fast_filter import to_input

    class Crops(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(rows)

        def __getitem__(self, i: int) -> tuple[Any, Any]:
            with Image.open(Path(data_dir) / rows[i]["crop"]) as im:
                rgb = np.asarray(im.convert("RGB"))
            return transform(to_input(rgb, img_size)), torch.tensor(float(rows[i]["y"]))

    return Crops()


def model_stats(model: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    from ropewatch_core.model.fast_filter import norm_stats

    mean, std = norm_stats(model)
    return tuple(mean.flatten().tolist()), tuple(std.flatten().tolist())


def score(
    model: Any, data_dir: Path, rows: list[dict[str, str]], img_size: int, batch_size: int = 64
) -> np.ndarray:
    """The model's logits z (pre-temperature) for every row, in order (eval mode, no augmentation)."""
    import numpy as np
    import torch

    mean, std = model_stats(model)
    loader = torch.utils.data.DataLoader(
        crop_dataset(data_dir, rows, img_size, transforms(False, mean, std)), batch_size=batch_size
    )
    model.eval()
    out = []
    with torch.inference_mode():
        for x, _ in loader:
            out.append(model(x).float().reshape(-1).numpy())
    return np.concatenate(out) if out else np.zeros(0)


def metrics(z: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> dict:
    """AUC, accuracy, F1 per class, confusion, ECE and loss (= NLL at T) at P(correct) >= 0.5."""
    import numpy as np

    from ropewatch_validator.evaluation.metrics import confusion_matrix, prf
    from ropewatch_validator.trace.calibration import ece, nll, probability, roc_auc

    z, y = np.asarray(z, np.float64), np.asarray(y, np.int64)
    p = probability(z, temperature)
    cm = confusion_matrix(y, (p >= 0.5).astype(np.int64), 2)
    both = 0 < y.sum() < y.size
    return {
        "n": int(y.size),
        "n_correct": int(y.sum()),
        "n_wrong": int(y.size - y.sum()),
        "temperature": float(temperature),
        "loss": nll(z, y, temperature),
        "auc": roc_auc(z, y) if both else None,
        "accuracy": float(np.trace(cm) / max(1, y.size)),
        "f1_wrong": prf(int(cm[0, 0]), int(cm[1, 0]), int(cm[0, 1]))[2],
        "f1_correct": prf(int(cm[1, 1]), int(cm[0, 1]), int(cm[1, 0]))[2],
        "confusion": cm.tolist(),
        "ece": ece(p, y),
    }
