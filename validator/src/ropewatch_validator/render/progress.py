"""The one terminal progress display (Rich, on stderr, gone when done). The CLI and the long-running use
cases below it (training, the backtest, annotate fill) share it: it sits in the lowest presentation
layer."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress


def progress_bar(*, quiet: bool, spinner: bool = False) -> Progress:
    """A transient bar on stderr with count and elapsed time; off with ``quiet`` or without a terminal
    (cron, pipes), so logs and captured output never hold its control characters."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    columns = (
        *((SpinnerColumn(),) if spinner else ()),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    return Progress(
        *columns, console=Console(stderr=True), transient=True, disable=quiet or not sys.stderr.isatty()
    )
