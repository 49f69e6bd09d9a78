"""`ropewatch card`: the team's model card (card.html, card.md) from a backtest result or a scores CSV.

Exit codes: 0 written, 2 could not (bad input; nothing written). See docs/card-and-gate.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "card", help="the model card of a version: from backtest.json or a scores CSV (truth, p_correct)"
    )
    p.add_argument("source", type=Path, metavar="BACKTEST.json|SCORES.csv")
    p.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="writes DIR/card.html and DIR/card.md"
    )
    p.add_argument(
        "--version", help="the version the card is about (default: the last); a scores CSV's version name"
    )
    p.add_argument("--baseline", help="the version it is compared with (default: the one before it)")
    p.add_argument("--thr", type=float, help="a scores CSV's threshold on P(correct) (required for a CSV)")
    p.add_argument("--images", type=Path, metavar="DIR", help="folder holding the persons' frame files")
    p.add_argument("--config", type=Path, metavar="CONFIG.json", help="the checkpoint's config block")
    p.add_argument(
        "--n-boot", type=int, default=2000, help="bootstrap resamples for a scores CSV (default 2000)"
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed for a scores CSV (default 0)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ropewatch_validator.app.card import CardRequest, make_card

    req = CardRequest(
        source=args.source,
        out=args.out,
        version=args.version,
        baseline=args.baseline,
        thr=args.thr,
        images=args.images,
        config=args.config,
        n_boot=args.n_boot,
        seed=args.seed,
    )
    done = make_card(req)
    against = f" against {done.baseline}" if done.baseline else " (no other version to compare with)"
    print(f"model card of {done.version}{against}: {done.html} and {done.md}")
    if done.pictures:
        print(f"pictures not shown: {done.pictures}")
    return 0
