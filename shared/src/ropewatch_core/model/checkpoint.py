"""The checkpoint contract: one torch.save dict, validated on load with one message naming the file.

Keys: ``state_dict``, ``labels`` (order as trained, must contain ``wrong`` and ``correct``), ``thr``
(threshold on P(correct)), ``config`` (see ModelConfig); optional ``temperature`` (default 1),
``version``, ``metrics``, ``untrained``, ``calibration``. Past releases broke on a missing ``thr`` and on
three labels, so every such case fails here rather than in the handler.

The team's trainer writes ``labels``, ``thr`` and ``version`` inside ``config``, beside its training
metadata: each of those three may sit at the top level or in ``config`` (both with different values is
refused), and the keys of TRAINING_KEYS are kept as ``Checkpoint.training`` (shown by ``inspect``, printed
by the card) without changing what is served. Any other ``config`` key that is no ModelConfig field is
refused by name, so a typo never silently falls back to a default.

Loading ends with one dry forward pass at the real input size (``config.img_size``) whose logits must be
finite: a file that passes every key check but cannot serve (a size the patch does not divide, NaN
weights) is refused here, where hot-swap keeps the previous model, rather than failing every request.
Every failure, whatever raised it, is one ``CheckpointError`` line.

Serving always needs ``thr``. Judging an old version that stored none (``backtest``, ``card``) passes
``require_thr=False`` or a ``thr`` of its own; ``Checkpoint.thr_source`` says where the threshold came from.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import torch
from torch import nn

from ropewatch_core.errors import InputError
from ropewatch_core.files import atomic_write_with
from ropewatch_core.jsonio import finite_number as _finite
from ropewatch_core.model.classifier import ModelConfig, RopeClassifier
from ropewatch_core.records import one_line
from ropewatch_core.spec import ATTRIBUTE_VALUES

REQUIRED_KEYS = ("state_dict", "labels", "thr", "config")
PROMOTED_KEYS = ("labels", "thr", "version")  # may sit at the top level or inside ``config``
# training metadata the team's trainer writes into ``config`` (the model card's Config block): kept, shown,
# never used to build or serve the model
TRAINING_KEYS = frozenset(
    {
        "arch",
        "params_M",
        "jitter",
        "class_weights",
        "best_val_AP",
        "best_epoch",
        "epochs_run",
        "total_train_time_s",
        "test_metrics",
        "val_metrics",
        "hyperparams",
        "history",
        "seed",
        "dataset",
        "notes",
    }
)
MAX_SIDE = 4096  # config.img_size bound: a 1280x720 model is the design point; 4096 px is ~16x its tokens


class CheckpointError(InputError):
    """A checkpoint file that cannot be served; the message (one line) names the file and the problem."""


@dataclass
class Checkpoint:
    path: str
    sha256: str
    labels: list[str]
    thr: float
    temperature: float
    config: ModelConfig
    model: RopeClassifier
    version: str
    metrics: dict = field(default_factory=dict)
    untrained: bool = False
    training: dict = field(default_factory=dict)  # TRAINING_KEYS found in ``config``, as stored
    thr_source: str = "checkpoint"  # or "--thr" (given by the caller) or "none" (no thr: not servable)

    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _config(raw: dict, fail: Callable[[str], NoReturn]) -> ModelConfig:
    known = set(ModelConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - known - TRAINING_KEYS - set(PROMOTED_KEYS))
    if unknown:
        fail(f"unknown config keys {unknown} (neither ModelConfig fields nor known training metadata)")
    cfg = {k: v for k, v in raw.items() if k in known}
    if "img_size" in cfg:
        size = cfg["img_size"]
        if not (
            isinstance(size, (list, tuple))
            and len(size) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_SIDE for v in size)
        ):
            fail(f"config.img_size must be [width, height] integers in [1, {MAX_SIDE}], got {str(size)[:80]}")
        cfg["img_size"] = tuple(size)
    expand = cfg.get("expand", {})
    if not (
        isinstance(expand, dict)
        and set(expand) <= {"x", "y_top", "y_bot"}
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in expand.values())
    ):
        fail(f"config.expand must be {{x, y_top, y_bot}} non-negative numbers, got {expand!r}")
    if not isinstance(cfg.get("backbone_name", ""), str):
        fail(f"config.backbone_name must be a timm model name, got {str(cfg['backbone_name'])[:80]}")
    config = ModelConfig(**cfg)
    import timm

    if not timm.is_model(config.backbone_name):
        fail(f"unknown backbone {config.backbone_name[:80]!r} (not a timm model name)")
    return config


_MISSING = object()


def flatten(raw: object, path: str) -> dict:
    """``raw`` with ``labels``/``thr``/``version`` taken from ``config`` where the top level lacks them;
    the same key in both places with different values is one CheckpointError line."""

    if not isinstance(raw, dict):
        _fail(path, f"expected a dict saved with torch.save, got {type(raw).__name__}")
    config = raw.get("config")
    if config is None:
        return dict(raw)
    if not isinstance(config, dict):
        _fail(path, "'config' must be a dict")
    flat = dict(raw)
    for key in PROMOTED_KEYS:
        top, inner = raw.get(key, _MISSING), config.get(key, _MISSING)
        if inner is _MISSING:
            continue
        if top is not _MISSING and not _same(top, inner):
            _fail(
                path,
                f"{key!r} is {str(top)[:60]} at the top level but {str(inner)[:60]} in config: "
                "remove one or make them equal",
            )
        flat[key] = inner
    return flat


def normalised(raw: object, path: str) -> dict:
    """:func:`flatten`, with ``labels``/``thr``/``version`` then removed from ``config``: the layout to
    edit and save (recalibrate, import), so a new top-level value never conflicts with a stale one."""
    flat = flatten(raw, path)
    if isinstance(flat.get("config"), dict):
        flat["config"] = {k: v for k, v in flat["config"].items() if k not in PROMOTED_KEYS}
    return flat


def _same(a: object, b: object) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return bool(a == b) and isinstance(a, bool) == isinstance(b, bool)


def training_of(raw: dict) -> dict:
    """The training metadata kept from ``config`` (TRAINING_KEYS, as stored)."""
    config = raw.get("config")
    return {k: v for k, v in config.items() if k in TRAINING_KEYS} if isinstance(config, dict) else {}


def validate(
    raw: object, path: str, device: str = "cpu", *, require_thr: bool = True
) -> tuple[ModelConfig, RopeClassifier]:
    """Check a loaded dict against the contract, build the model, load its weights strictly and run the
    dry forward pass on ``device``; any failure, of whatever type, is one CheckpointError naming ``path``.
    ``require_thr=False`` accepts a file without ``thr`` (to be judged with a threshold of its own)."""
    try:
        flat = flatten(raw, path)
        config, model = _validate(flat, path, require_thr)
        model = model.to(device)
        _dry_run(model, config, len(flat["labels"]), lambda problem: _fail(path, problem))
    except CheckpointError:
        raise
    except Exception as exc:  # every way a file can break is one line for the operator
        raise CheckpointError(f"checkpoint {path}: {one_line(exc)}") from None
    return config, model


def _fail(path: str, problem: str) -> NoReturn:
    raise CheckpointError(f"checkpoint {path}: {problem}")


def _dry_run(
    model: RopeClassifier, config: ModelConfig, n_labels: int, fail: Callable[[str], NoReturn]
) -> None:
    """One forward pass on a grey frame of ``config.img_size`` with one box; the logits must be finite."""
    width, height = config.img_size
    patch = model.patch_size
    if width % patch or height % patch:
        fail(f"config.img_size {width}x{height} is not a multiple of the backbone's patch size {patch}")
    device = next(model.parameters()).device
    with torch.inference_mode():
        image = torch.full((1, 3, height, width), 0.5, device=device)
        logits = model(image, torch.tensor([[0.0, 0.0, float(width), float(height)]], device=device))
    if tuple(logits.shape) != (1, n_labels):
        fail(f"dry forward pass gave logits of shape {tuple(logits.shape)}, not (1, {n_labels})")
    if not bool(torch.isfinite(logits).all()):
        fail("dry forward pass gave non-finite logits (NaN or infinite weights?)")


def _validate(raw: dict, path: str, require_thr: bool) -> tuple[ModelConfig, RopeClassifier]:
    def fail(problem: str) -> NoReturn:
        _fail(path, problem)

    missing = [k for k in REQUIRED_KEYS if k not in raw and (require_thr or k != "thr")]
    if missing:
        fail(f"missing {', '.join(repr(k) for k in missing)}")
    labels = raw["labels"]
    if not (isinstance(labels, (list, tuple)) and all(isinstance(x, str) for x in labels)):
        fail(f"'labels' must be a list of strings, got {labels!r}")
    if len(set(labels)) != len(labels):
        fail(f"'labels' has duplicates: {list(labels)}")
    absent = [name for name in ATTRIBUTE_VALUES if name not in labels]
    if absent:
        fail(f"'labels' {list(labels)} lacks {', '.join(repr(a) for a in absent)}")
    thr = raw.get("thr", 0.5)
    if not (_finite(thr) and 0.0 <= thr <= 1.0):
        fail(f"'thr' must be a number in [0, 1], got {str(thr)[:40]}")
    temperature = raw.get("temperature", 1.0)
    if temperature is not None and not (_finite(temperature) and temperature > 0):
        fail(f"'temperature' must be a positive number, got {str(temperature)[:40]}")
    config = _config(raw["config"], fail)
    state = raw["state_dict"]
    if not (isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())):
        fail("'state_dict' must be a dict of tensors")
    head = state.get("head.3.weight")
    if head is None:
        fail("'state_dict' has no head weights ('head.3.weight')")
    if head.shape[0] != len(labels):
        fail(f"head has {head.shape[0]} outputs but 'labels' has {len(labels)} ({list(labels)})")
    try:
        model = RopeClassifier(config, len(labels))
    except (TypeError, ValueError, RuntimeError, AttributeError) as exc:
        fail(f"config cannot build the model ({one_line(exc, 200)})")
    if model.backbone.num_features != config.feat_ch:
        fail(
            f"config.feat_ch is {config.feat_ch} but backbone {config.backbone_name} "
            f"gives {model.backbone.num_features}"
        )
    load_weights(model, state, config.backbone_name, fail)
    return config, model.eval()


def load_weights(model: nn.Module, state: dict, name: str, fail: Callable[[str], NoReturn]) -> None:
    """Load ``state`` strictly, first naming up to three missing, unexpected or misshapen entries in
    one line (torch's own error lists them all, over many lines)."""
    expected = model.state_dict()
    problems = [f"missing {k}" for k in expected if k not in state]
    problems += [f"unexpected {k}" for k in state if k not in expected]
    problems += [
        f"{k} has shape {tuple(state[k].shape)}, model expects {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        fail(f"weights do not fit {name}: {'; '.join(problems[:3])}{more}")
    model.load_state_dict(state, strict=True)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, str]:
    """The raw dict and the file's sha256, not yet validated; an unreadable file raises CheckpointError."""
    path = str(path)
    if not Path(path).is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True), file_sha256(path)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path}: not a readable torch checkpoint ({one_line(exc)})"
        ) from None


def version_of(raw: dict, sha256: str) -> str:
    """The version the function logs for a checkpoint: its own ``version``, else ``sha256:`` and the
    first 12 hex digits of the file's sha256 (so an unversioned checkpoint is still told apart)."""
    return str(raw.get("version") or f"sha256:{sha256[:12]}")


def load_checkpoint(
    path: str | os.PathLike, device: str = "cpu", *, thr: float | None = None, require_thr: bool = True
) -> Checkpoint:
    """Load, validate, dry-run on ``device``; any problem is one CheckpointError line naming ``path``.

    The function calls it as is: a file without ``thr`` is refused. A backtest passes ``thr`` (used in
    place of the file's, ``thr_source`` "--thr") or ``require_thr=False`` (a file without one loads with
    ``thr`` NaN and ``thr_source`` "none"; its caller picks one)."""
    path = str(path)
    if thr is not None and not (_finite(thr) and 0.0 <= thr <= 1.0):
        raise CheckpointError(f"checkpoint {path}: the threshold given must be in [0, 1], got {thr}")
    raw, sha = read_checkpoint(path)
    config, model = validate(raw, path, device, require_thr=require_thr and thr is None)
    try:
        return _checkpoint(path, sha, flatten(raw, path), config, model, thr, training_of(raw))
    except Exception as exc:  # e.g. metrics that is no mapping
        raise CheckpointError(f"checkpoint {path}: {one_line(exc)}") from None


def _checkpoint(
    path: str,
    sha: str,
    raw: dict,
    config: ModelConfig,
    model: RopeClassifier,
    thr: float | None,
    training: dict,
) -> Checkpoint:
    stored = raw.get("thr")
    if thr is not None:
        value, source = float(thr), "--thr"
    elif stored is not None:
        value, source = float(stored), "checkpoint"
    else:
        value, source = math.nan, "none"
    return Checkpoint(
        path=path,
        sha256=sha,
        labels=list(raw["labels"]),
        thr=value,
        temperature=float(raw.get("temperature") or 1.0),
        config=config,
        model=model,
        version=version_of(raw, sha),
        metrics=dict(raw.get("metrics") or {}),
        untrained=bool(raw.get("untrained", False)),
        training=training,
        thr_source=source,
    )


def demo_checkpoint(
    config: ModelConfig | None = None,
    labels: tuple[str, ...] = ATTRIBUTE_VALUES,
    thr: float = 0.5,
    version: str = "demo-untrained",
    seed: int = 0,
) -> dict:
    """A random-init (``pretrained=False``) checkpoint dict of the real architecture, marked untrained."""
    config = config or ModelConfig()
    torch.manual_seed(seed)
    model = RopeClassifier(config, len(labels))
    return {
        "state_dict": model.state_dict(),
        "labels": list(labels),
        "thr": float(thr),
        "temperature": 1.0,
        "config": config.to_dict(),
        "version": version,
        "untrained": True,
        "metrics": {},
    }


def save_checkpoint(checkpoint: dict, path: str | os.PathLike) -> None:
    """Write atomically (temp file + rename) so a watching function never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(path, lambda f: torch.save(checkpoint, f))


def describe(ckpt: Checkpoint) -> dict:
    """What `ropewatch checkpoint inspect` prints."""
    return {
        "file": ckpt.path,
        "sha256": ckpt.sha256,
        "version": ckpt.version,
        "untrained": ckpt.untrained,
        "labels": ckpt.labels,
        "thr": ckpt.thr,
        "temperature": ckpt.temperature,
        "config": ckpt.config.to_dict(),
        "parameters": ckpt.n_parameters(),
        "metrics": ckpt.metrics,
        "training": ckpt.training,
    }
