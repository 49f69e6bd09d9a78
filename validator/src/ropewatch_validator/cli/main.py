"""The `ropewatch` console script: one argparse tree, one module per subcommand.

Each module listed in SUBCOMMANDS exposes ``register(subparsers)`` and sets ``func`` on its
parser(s); ``func(args) -> int`` returns the process exit code. Subcommand modules keep heavy
imports (torch, cvat-sdk) inside ``func`` so ``ropewatch --help`` stays fast.

Errors are mapped here, in one place: a ``RopewatchError`` raised below the CLI becomes one line on
stderr, prefixed with the command, and its own exit code (see ``ropewatch_core.errors``); an
``OSError`` (a file or socket the command could not use) is exit 2 the same way.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from ropewatch_core.errors import EXIT_ERROR, RopewatchError
from ropewatch_validator.cli.logconfig import configure_logging

SUBCOMMANDS: tuple[str, ...] = (
    "ropewatch_validator.cli.demo",
    "ropewatch_validator.cli.checkpoint",
    "ropewatch_validator.cli.validate",
    "ropewatch_validator.cli.queue",
    "ropewatch_validator.cli.history",
    "ropewatch_validator.cli.serve",
    "ropewatch_validator.cli.fast_filter",
    "ropewatch_validator.cli.review",
    "ropewatch_validator.cli.annotate",
    "ropewatch_validator.cli.backtest",
    "ropewatch_validator.cli.card",
    "ropewatch_validator.cli.gate",
    "ropewatch_validator.cli.webhook",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ropewatch", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"ropewatch {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(name).register(sub)
    return parser


def _version() -> str:
    try:
        return version("ropewatch")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    configure_logging()
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RopewatchError as exc:
        print(f"{_command(args)}: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # a file, folder or socket the command could not use: never a traceback
        print(f"{_command(args)}: {exc}", file=sys.stderr)
        return EXIT_ERROR


def _command(args: argparse.Namespace) -> str:
    """The name a person typed, for the error line: ``validate-job`` or ``ropewatch <sub> ...``."""
    name = str(getattr(args, "command", ""))
    return name if name == "validate-job" else f"ropewatch {name}"


def validate_job_main(argv: Sequence[str] | None = None) -> int:
    """`validate-job ...` is `ropewatch validate-job ...` (cron-friendly name)."""
    return main(["validate-job", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
