"""`ropewatch checkpoint demo|inspect|import` (and whatever CHECKPOINT_SUBCOMMANDS adds, e.g. recalibrate)."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from ropewatch_core.spec import ATTRIBUTE_VALUES

# modules exposing register(checkpoint_subparsers), added under `ropewatch checkpoint`
CHECKPOINT_SUBCOMMANDS: tuple[str, ...] = ("ropewatch_validator.cli.recalibrate",)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "checkpoint", help="create, inspect or recalibrate rope classifier checkpoints"
    )
    sub = parser.add_subparsers(dest="checkpoint_command", required=True, metavar="ACTION")
    demo = sub.add_parser("demo", help="write an untrained (random-init) checkpoint of the real architecture")
    demo.add_argument("output", type=Path, metavar="OUT.pt")
    demo.add_argument(
        "--img-size",
        type=int,
        nargs=2,
        metavar=("W", "H"),
        default=None,
        help="model input size (default 1280 720)",
    )
    demo.add_argument(
        "--backbone", default=None, help="timm backbone name (default vit_small_patch16_dinov3)"
    )
    demo.add_argument("--labels", nargs="+", default=list(ATTRIBUTE_VALUES))
    demo.add_argument("--thr", type=float, default=0.5)
    demo.add_argument("--version", default="demo-untrained")
    demo.set_defaults(func=run_demo)
    inspect = sub.add_parser(
        "inspect", help="validate a checkpoint and print labels, thr, config, version, size"
    )
    inspect.add_argument("file", type=Path)
    inspect.add_argument("--json", action="store_true", help="print JSON instead of text")
    inspect.set_defaults(func=run_inspect)
    imp = sub.add_parser(
        "import",
        help="convert a foreign state dict into the checkpoint contract (validated, dry-run, atomic)",
        description="SRC: a raw state dict or a dict with model/state_dict/model_state_dict (and optional "
        "config, labels, thr, version). The result is validated as the function validates it.",
    )
    imp.add_argument("src", type=Path, metavar="SRC")
    imp.add_argument("out", type=Path, metavar="OUT.pt")
    imp.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="rename weights whose name starts with OLD (repeatable; first match wins; NEW may be empty)",
    )
    imp.add_argument("--labels", nargs="+", default=None, help="label order of the head (default: SRC's)")
    imp.add_argument("--thr", type=float, default=None, help="threshold on P(correct) (default: SRC's)")
    imp.add_argument("--version", default=None, help="version name (default: SRC's)")
    imp.set_defaults(func=run_import)
    for name in CHECKPOINT_SUBCOMMANDS:
        importlib.import_module(name).register(sub)


def run_demo(args: argparse.Namespace) -> int:
    from ropewatch_core.records import one_line
    from ropewatch_validator.learn.model import (
        CheckpointError,
        ModelConfig,
        demo_checkpoint,
        save_checkpoint,
        validate,
    )

    overrides: dict[str, Any] = {}
    if args.img_size:
        overrides["img_size"] = tuple(args.img_size)
    if args.backbone:
        overrides["backbone_name"] = args.backbone
    try:
        checkpoint = demo_checkpoint(
            ModelConfig(**overrides), labels=tuple(args.labels), thr=args.thr, version=args.version
        )
        validate(checkpoint, str(args.output))  # never write a file the function would refuse
        save_checkpoint(checkpoint, args.output)
    except CheckpointError as exc:
        print(f"ropewatch checkpoint demo: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"ropewatch checkpoint demo: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
        return 2
    except (ValueError, RuntimeError) as exc:  # timm refuses a size or a name
        print(f"ropewatch checkpoint demo: {args.output}: {one_line(exc)}", file=sys.stderr)
        return 2
    print(
        f"{args.output}: untrained demo checkpoint ({checkpoint['config']['backbone_name']}, "
        f"img_size {checkpoint['config']['img_size']}, labels {checkpoint['labels']}, "
        f"thr {checkpoint['thr']})"
    )
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from ropewatch_validator.learn.model import CheckpointError, describe, load_checkpoint

    try:
        info = describe(load_checkpoint(args.file))
    except CheckpointError as exc:
        print(f"ropewatch checkpoint inspect: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key in ("file", "version", "untrained", "labels", "thr", "temperature", "parameters", "sha256"):
        print(f"{key:22} {info[key]}")
    for key, value in info["config"].items():
        print(f"{'config.' + key:22} {value}")
    if info["metrics"]:
        print(f"{'metrics':22} {json.dumps(info['metrics'])}")
    for key, value in info["training"].items():
        print(f"{'training.' + key:22} {json.dumps(value, ensure_ascii=False)}")
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ropewatch_validator.learn.checkpoint_import import import_checkpoint, parse_maps

    done = import_checkpoint(
        args.src, args.out, parse_maps(args.map), labels=args.labels, thr=args.thr, version=args.version
    )
    thr = (
        f"thr {done.thr}"
        if done.thr is not None
        else "no thr: the function refuses it; judge it with `backtest --thr` or `--thr-from-split`"
    )
    print(
        f"{done.path}: imported {done.n_weights} weights ({done.renamed} renamed), version "
        f"{done.version or '(none)'}, labels {list(done.labels)}, {thr}"
    )
    return 0
