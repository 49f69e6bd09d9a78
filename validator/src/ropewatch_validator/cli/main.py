"""The `ropewatch` console script: one argparse tree, one module per subcommand.

Each module listed in SUBCOMMANDS exposes ``register(subparsers)`` and sets ``func`` on its
parser(s); ``func(args) -> int`` returns the process exit code. Subcommand modules keep heavy
imports (torch, cvat-sdk) inside ``func`` so ``ropewatch --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ropewatch_validator.cli.logconfig import configure_logging

SUBCOMMANDS: tuple[str, ...] = (
    "ropewatch_validator.cli.demo",
    "ropewatch_validator.cli.checkpoint",
    "ropewatch_validator.cli.validate",
    "ropewatch_validator.cli.history",
    "ropewatch_validator.cli.serve",
    "ropewatch_validator.cli.train",
    "ropewatch_validator.cli.filter_eval",
    "ropewatch_validator.cli.dataset",
    "ropewatch_validator.cli.cascade",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ropewatch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


def validate_job_main(argv: Sequence[str] | None = None) -> int:
    """`validate-job ...` is `ropewatch validate-job ...` (cron-friendly name)."""
    return main(["validate-job", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
