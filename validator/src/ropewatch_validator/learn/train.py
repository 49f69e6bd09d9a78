"""Training the cascade's fast filter on the crops of a data directory (`ropewatch train fast-filter`).

``timm.create_model(name, num_classes=1, pretrained=False)`` (weights from a local file with
``weights``, never from a hub), BCEWithLogitsLoss, AdamW and CosineAnnealingLR over the epochs;
training crops are augmented (RandomHorizontalFlip, ColorJitter, RandomAffine, GaussianBlur, then
Normalize), validation crops only normalized. After every epoch it logs train/val loss, accuracy, AUC
and F1 (one JSON line per epoch in ``history.jsonl``), saves ``last.pt`` (model, optimizer, scheduler,
epoch: ``resume`` continues from it) and, when the validation AUC improves, ``best.pt``, a filter
checkpoint ``ropewatch calibrate`` and the function read.

Resuming reads ``last.pt`` the checkpoint contract's way (``weights_only=True``: a crafted pickle runs
nothing). ``last.pt`` carries the history rows of the epochs it holds, and ``history.jsonl`` is rewritten
from them (atomically) after each save and on resume: a kill between the two writes can neither repeat
nor lose an epoch's row.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ropewatch_core.errors import InputError

DEFAULT_MODEL = "mobilenetv4_hybrid_medium"  # the plan's mobilenetv4_hybrid_medium.ix_e550_r256_in1k
LAST_KEYS = frozenset(
    {"model", "optimizer", "scheduler", "rng", "shuffle_rng", "epoch", "best", "model_name", "img_size"}
)


@dataclass(frozen=True)
class TrainOptions:
    """What one training run is asked to do; checked when made (an InputError names the option)."""

    data_dir: Path
    output_dir: Path
    model_name: str = DEFAULT_MODEL
    weights: Path | None = None
    img_size: int = 256
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.05
    resume: bool = False
    seed: int = 0
    workers: int = 0
    threads: int | None = None
    quiet: bool = False

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "img_size"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be >= 1")
        if not self.lr > 0:
            raise InputError("--lr must be > 0")


@dataclass(frozen=True)
class Best:
    """The run's best epoch (by validation AUC), its AUC and the filter checkpoint saved for it."""

    epoch: int
    auc: float
    path: Path


def _expand(data_dir: Path) -> dict:
    """The expand rule the crops were cut with (dataset.json of `dataset build`), else the default."""
    from ropewatch_core.model.fast_filter import DEFAULT_EXPAND

    info = data_dir / "dataset.json"
    if info.is_file():
        return dict(json.loads(info.read_text(encoding="utf-8")).get("expand") or DEFAULT_EXPAND)
    return dict(DEFAULT_EXPAND)


def _both_classes(data_dir: Path, split: str, rows: list[dict[str, str]]) -> None:
    """A filter trained or judged on one class learns nothing (its AUC does not exist): refuse it."""
    n_correct = sum(r["y"] == "1" for r in rows)
    if n_correct in (0, len(rows)):
        raise InputError(
            f"{data_dir / f'{split}_manifest.csv'}: all {len(rows)} crops are "
            f"{'correct' if n_correct else 'wrong'}; training needs both classes in train and val"
        )


def read_last(path: Path) -> dict[str, Any]:
    """``last.pt`` loaded safely (weights only, as every checkpoint is) with the keys resume needs."""
    from ropewatch_core.model.checkpoint import read_checkpoint

    state, _ = read_checkpoint(path)
    missing = sorted(LAST_KEYS - set(state)) if isinstance(state, dict) else sorted(LAST_KEYS)
    if missing:
        raise InputError(f"{path}: not a training state to resume from (missing {', '.join(missing)})")
    return state


def read_history(path: Path, upto: int) -> list[dict[str, Any]]:
    """The rows of ``history.jsonl`` for epochs 1..``upto`` (those the resumed checkpoint holds)."""
    if not path.is_file():
        return []
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        try:
            row = json.loads(line)
            epoch = int(row["epoch"])
        except (ValueError, KeyError, TypeError):
            raise InputError(f"{path}:{i}: not a history row") from None
        if epoch <= upto:
            rows.append(row)
    return rows


def train(args: TrainOptions) -> Best | None:
    """The training loop over ``args`` (a TrainOptions, never an argparse namespace); returns the best
    epoch, None when resuming a finished run. Refuses a manifest with one class before building the model."""
    import torch

    from ropewatch_core.files import atomic_write
    from ropewatch_core.model.checkpoint import save_checkpoint
    from ropewatch_core.model.fast_filter import build_model, new_checkpoint
    from ropewatch_validator.learn import data as fd
    from ropewatch_validator.render.progress import progress_bar

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_rows, val_rows = fd.read_manifest(args.data_dir, "train"), fd.read_manifest(args.data_dir, "val")
    _both_classes(args.data_dir, "train", train_rows)
    _both_classes(args.data_dir, "val", val_rows)
    y_val = fd.labels(val_rows)
    model = build_model(args.model_name, args.weights)
    mean, std = fd.model_stats(model)
    shuffle = torch.Generator().manual_seed(args.seed)
    loader = torch.utils.data.DataLoader(
        fd.crop_dataset(args.data_dir, train_rows, args.img_size, fd.transforms(True, mean, std)),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        generator=shuffle,
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start, best = 0, None
    history: list[dict[str, Any]] = []
    if args.resume and (out / "last.pt").is_file():
        state = read_last(out / "last.pt")
        if (state["model_name"], state["img_size"]) != (args.model_name, args.img_size):
            raise InputError(
                f"{out / 'last.pt'} is {state['model_name']} at {state['img_size']} px, "
                f"not {args.model_name} at {args.img_size} px"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])  # augmentations draw from torch's global generator
        shuffle.set_state(state["shuffle_rng"])
        start, best = int(state["epoch"]), state["best"]
        # the checkpoint's own rows (older files: history.jsonl's, cut at its epoch), written back now
        history = list(state["history"]) if "history" in state else read_history(out / "history.jsonl", start)
        atomic_write(out / "history.jsonl", _jsonl(history))
    if start >= args.epochs:
        return None
    progress = progress_bar(quiet=args.quiet)
    expand = _expand(args.data_dir)
    with progress:
        for epoch in range(start + 1, args.epochs + 1):
            t0 = time.perf_counter()
            bar = progress.add_task(f"epoch {epoch}/{args.epochs}", total=len(loader))
            model.train()
            total, seen = 0.0, 0
            for x, y in loader:
                optimizer.zero_grad()
                loss = loss_fn(model(x).reshape(-1), y)
                loss.backward()
                optimizer.step()
                total, seen = total + float(loss.detach()) * len(y), seen + len(y)
                progress.advance(bar)
            scheduler.step()
            progress.remove_task(bar)
            m = fd.metrics(fd.score(model, args.data_dir, val_rows, args.img_size, args.batch_size), y_val)
            row = {
                "epoch": epoch,
                "train_loss": total / max(1, seen),
                "val_loss": m["loss"],
                "val_accuracy": m["accuracy"],
                "val_auc": m["auc"],
                "val_f1_wrong": m["f1_wrong"],
                "val_f1_correct": m["f1_correct"],
                "lr": scheduler.get_last_lr()[0],
                "seconds": round(time.perf_counter() - t0, 3),
            }
            progress.console.print(
                f"epoch {epoch}: train loss {row['train_loss']:.4f}, val loss {m['loss']:.4f}, "
                f"acc {m['accuracy']:.4f}, AUC {_num(m['auc'])}, F1 wrong {_num(m['f1_wrong'])} "
                f"correct {_num(m['f1_correct'])}",
                soft_wrap=True,
            )
            auc = float(m["auc"])  # both classes are in val (checked up front): the AUC exists
            if best is None or auc > best["auc"]:
                best = {"epoch": epoch, "auc": auc, **{k: row[k] for k in row if k.startswith("val_")}}
                ckpt = new_checkpoint(
                    model,
                    args.model_name,
                    args.img_size,
                    expand,
                    version=f"filter-{args.model_name}-e{epoch}",
                    metrics={"val": m, "epoch": epoch},
                    epoch=epoch,
                )
                save_checkpoint(ckpt, out / "best.pt")
            history.append(row)
            save_checkpoint(
                {
                    "history": history,  # the rows travel with the state they describe: one unit
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": torch.get_rng_state(),
                    "shuffle_rng": shuffle.get_state(),
                    "epoch": epoch,
                    "best": best,
                    "model_name": args.model_name,
                    "img_size": args.img_size,
                },
                out / "last.pt",
            )
            atomic_write(out / "history.jsonl", _jsonl(history))  # a copy of what last.pt holds
    return None if best is None else Best(int(best["epoch"]), float(best["auc"]), out / "best.pt")


def _jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
