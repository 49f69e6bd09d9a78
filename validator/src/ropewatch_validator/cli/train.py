"""`ropewatch train fast-filter`: train the cascade's fast filter on the crops of a data directory.

``timm.create_model(name, num_classes=1, pretrained=False)`` (weights from a local file with
``--weights``, never from a hub), BCEWithLogitsLoss, AdamW and CosineAnnealingLR over the epochs;
training crops are augmented (RandomHorizontalFlip, ColorJitter, RandomAffine, GaussianBlur, then
Normalize), validation crops only normalized. After every epoch it logs train/val loss, accuracy, AUC
and F1 (one JSON line per epoch in ``history.jsonl``), saves ``last.pt`` (model, optimizer, scheduler,
epoch: ``--resume`` continues from it) and, when the validation AUC improves, ``best.pt``, a filter
checkpoint ``ropewatch calibrate`` and the function read. Exit codes: 0 trained, 2 could not run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_MODEL = "mobilenetv4_hybrid_medium"  # the plan's mobilenetv4_hybrid_medium.ix_e550_r256_in1k


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train a model (fast-filter)")
    sub = train.add_subparsers(dest="train_command", required=True, metavar="MODEL")
    p = sub.add_parser("fast-filter", help="train the cascade's fast filter on person crops")
    p.add_argument(
        "--data-dir", type=Path, required=True, help="holds train_manifest.csv and val_manifest.csv"
    )
    p.add_argument("--model-name", default=DEFAULT_MODEL, help=f"timm model name (default {DEFAULT_MODEL})")
    p.add_argument("--weights", type=Path, default=None, help="local pretrained state dict (no hub access)")
    p.add_argument("--img-size", type=int, default=256, help="square crop side fed to the model")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=0.05)
    p.add_argument("--output-dir", type=Path, required=True)
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT_DIR/last.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _expand(data_dir: Path) -> dict:
    """The expand rule the crops were cut with (dataset.json of `dataset build`), else the default."""
    from ropewatch_core.model.fast_filter import DEFAULT_EXPAND

    info = data_dir / "dataset.json"
    if info.is_file():
        return dict(json.loads(info.read_text(encoding="utf-8")).get("expand") or DEFAULT_EXPAND)
    return dict(DEFAULT_EXPAND)


def run(args: argparse.Namespace) -> int:
    from ropewatch_validator.cli.filter_data import DataError

    for name in ("epochs", "batch_size", "img_size"):
        if getattr(args, name) < 1:
            print(f"ropewatch train fast-filter: --{name.replace('_', '-')} must be >= 1", file=sys.stderr)
            return 2
    if not args.lr > 0:
        print("ropewatch train fast-filter: --lr must be > 0", file=sys.stderr)
        return 2
    try:
        best = train(args)
    except (DataError, OSError, ValueError, RuntimeError) as exc:
        text = " ".join(str(exc).split())[:300]
        print(f"ropewatch train fast-filter: {text}", file=sys.stderr)
        return 2
    if best is None:
        print("ropewatch train fast-filter: nothing to do (all epochs done; raise --epochs)", file=sys.stderr)
        return 0
    print(f"best val AUC {best['auc']:.4f} (epoch {best['epoch']}): {args.output_dir / 'best.pt'}")
    return 0


def train(args: argparse.Namespace) -> dict | None:
    """The training loop; returns the best epoch's metrics (None when resuming a finished run)."""
    import torch

    from ropewatch_core.model.checkpoint import save_checkpoint
    from ropewatch_core.model.fast_filter import build_model, new_checkpoint
    from ropewatch_validator.cli import filter_data as fd
    from ropewatch_validator.cli.progress import progress_bar

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_rows, val_rows = fd.read_manifest(args.data_dir, "train"), fd.read_manifest(args.data_dir, "val")
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
    if args.resume and (out / "last.pt").is_file():
        state = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
        if (state["model_name"], state["img_size"]) != (args.model_name, args.img_size):
            raise ValueError(
                f"{out / 'last.pt'} is {state['model_name']} at {state['img_size']} px, "
                f"not {args.model_name} at {args.img_size} px"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])  # augmentations draw from torch's global generator
        shuffle.set_state(state["shuffle_rng"])
        start, best = int(state["epoch"]), state["best"]
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
            with (out / "history.jsonl").open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            progress.console.print(
                f"epoch {epoch}: train loss {row['train_loss']:.4f}, val loss {m['loss']:.4f}, "
                f"acc {m['accuracy']:.4f}, AUC {_num(m['auc'])}, F1 wrong {_num(m['f1_wrong'])} "
                f"correct {_num(m['f1_correct'])}",
                soft_wrap=True,
            )
            auc = m["auc"] if m["auc"] is not None else float("-inf")
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
            save_checkpoint(
                {
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
    return best


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"
