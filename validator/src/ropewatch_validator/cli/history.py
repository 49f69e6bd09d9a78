"""`ropewatch history` (trend of stored runs, table and plot) and `ropewatch baseline
set|show|clear|reference|add-backtest` (the two baselines: ``ops.baselines``)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ropewatch_core.errors import InputError

if TYPE_CHECKING:
    from ropewatch_validator.ops.history import HistoryStore


@dataclass(frozen=True)
class Column:
    """A trend column: its heading, the report metric its baseline is the median of, its value in a
    ``HistoryStore.trend`` row."""

    heading: str
    metric: str
    value: Callable[[dict[str, Any]], Any]
    plotted: bool = False


def _class_value(name: str, metric: str) -> Callable[[dict[str, Any]], Any]:
    return lambda row: row["classes"].get(name, {}).get(metric)


def trend_columns(rows: list[dict[str, Any]]) -> list[Column]:
    """Detection F1, F1 of every attribute class the runs have (their vocabulary, in report order),
    recall of the unsafe value and dangerous flips per 1,000 persons."""
    classes = list(dict.fromkeys(c for row in rows for c in row["classes"]))
    unsafe = next((row["unsafe_value"] for row in rows if row["unsafe_value"]), None)
    cols = [Column("F1 detection", "detection.f1", lambda row: row["det_f1"], plotted=True)]
    cols += [
        Column(f"F1 {c}", f"attribute.per_class.{c}.f1", _class_value(c, "f1"), plotted=True) for c in classes
    ]
    if unsafe:
        cols.append(
            Column(f"recall {unsafe}", f"attribute.per_class.{unsafe}.recall", _class_value(unsafe, "recall"))
        )
    cols.append(
        Column("dangerous flips /1000", "dangerous_flips_per_1000", lambda row: row["flips_per_1000"])
    )
    return cols


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        help="history store: SQLite path or SQLAlchemy URL (default: $ROPEWATCH_DB, "
        "else ~/.local/share/ropewatch/history.sqlite)",
    )


def register(subparsers: Any) -> None:
    hist = subparsers.add_parser("history", help="trend of stored validation runs (F1 per class over time)")
    which = hist.add_mutually_exclusive_group()
    which.add_argument("--job", type=int, help="only this CVAT job")
    which.add_argument("--project", type=int, help="only jobs of this CVAT project")
    which.add_argument("--model-version", help="only runs of this model version (shows its baseline)")
    hist.add_argument("--plot", metavar="FILE", help="also draw the trend to FILE (.png, .svg, .pdf)")
    hist.add_argument(
        "--baseline-runs",
        type=int,
        default=5,
        metavar="N",
        help="unpinned baseline = median of the first N runs (default 5)",
    )
    _add_db(hist)
    hist.set_defaults(func=history_main)

    base = subparsers.add_parser("baseline", help="show or pin the baseline a model version is compared with")
    actions = base.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="the baseline runs and their median metrics")
    pin = actions.add_parser("set", help="pin runs as the baseline of a model version")
    clear = actions.add_parser("clear", help="unpin: back to the median of the first N runs")
    ref = actions.add_parser(
        "reference", help="pin the version a model version is compared with (default: the previous one)"
    )
    ref.add_argument("model_version", metavar="MODEL_VERSION")
    which_ref = ref.add_mutually_exclusive_group(required=True)
    which_ref.add_argument(
        "reference", nargs="?", metavar="REFERENCE_VERSION", help="the version to compare with"
    )
    which_ref.add_argument("--previous", action="store_true", help="unpin: back to the previous version")
    ref.add_argument("--note", help="why this reference (stored with it)")
    _add_db(ref)
    ref.set_defaults(func=reference_main)
    add = actions.add_parser(
        "add-backtest",
        help="register a `ropewatch backtest` result: its paired differences show beside the pooled ones",
    )
    add.add_argument("file", metavar="BACKTEST_JSON")
    _add_db(add)
    add.set_defaults(func=add_backtest_main)
    for parser in (show, pin, clear):
        parser.add_argument("model_version", metavar="MODEL_VERSION")
        _add_db(parser)
    show.add_argument("--first", type=int, default=5, metavar="N", help="unpinned: first N runs (default 5)")
    source = pin.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--runs", type=int, nargs="+", metavar="RUN_ID", help="run ids (see `ropewatch history`)"
    )
    source.add_argument("--first", type=int, metavar="N", help="pin the model version's first N runs")
    pin.add_argument("--note", help="why this baseline (stored with it)")
    for parser in (show, pin, clear):
        parser.set_defaults(func=baseline_main)


def _fmt(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _open(args: argparse.Namespace) -> HistoryStore:
    from ropewatch_validator.ops.history import open_store

    return open_store(args.db)


def history_main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from ropewatch_validator.ops.baselines import own_levels

    console = Console()
    store = _open(args)
    rows = store.trend(job=args.job, project=args.project, model_version=args.model_version)
    columns = trend_columns(rows)
    baseline = None
    if args.model_version:
        baseline = own_levels(store, args.model_version, [c.metric for c in columns], args.baseline_runs)
    if not rows:
        console.print("no stored runs match")
        return 0
    table = Table(title=f"ropewatch history ({store.label})")
    for heading in ("run", "recorded (UTC)", "job", "task", "model", "job updated", "persons"):
        table.add_column(heading)
    for col in columns:
        table.add_column(col.heading, justify="right")
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["recorded_at"][:19].replace("T", " "),
            str(row["job_id"]),
            _fmt(row["task_id"]),
            row["model_version"],
            row["job_updated_date"][:19],
            _fmt(row["references"]),
            *(_fmt(col.value(row)) for col in columns),
        )
    if baseline is not None:
        table.add_section()
        table.add_row(
            "own baseline",
            "",
            "",
            "",
            args.model_version,
            "",
            "",
            *(_fmt(baseline[col.metric]) for col in columns),
        )
    console.print(table)
    if args.plot:
        plot_trend(rows, columns, args.plot, baseline)
        console.print(f"plot written to {args.plot}")
    return 0


def plot_trend(
    rows: list[dict[str, Any]],
    columns: list[Column],
    path: str,
    baseline: dict[str, float | None] | None = None,
) -> None:
    """F1 per class (and detection) over time; dashed lines are the baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ropewatch_validator.ops.history import parse_time

    times = [parse_time(r["recorded_at"]) for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for col in (c for c in columns if c.plotted):
        values = [float("nan") if col.value(r) is None else col.value(r) for r in rows]
        # matplotlib's stubs leave out the datetime x values its unit converters accept
        line = ax.plot(times, values, marker="o", label=col.heading)[0]  # type: ignore[arg-type]
        level = (baseline or {}).get(col.metric)
        if level is not None:
            ax.axhline(level, linestyle="--", color=line.get_color(), alpha=0.6)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("F1")
    ax.set_title("ropewatch: F1 per class over time")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def baseline_main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ropewatch_validator.ops.baselines import own_levels, reference_of

    console = Console()
    store = _open(args)
    if args.action == "set":
        run_ids = args.runs or store.baseline_runs(args.model_version, args.first)[0]
        store.pin_baseline(args.model_version, run_ids, args.note)
        console.print(f"baseline of {args.model_version} pinned to runs {sorted(run_ids)}")
        return 0
    if args.action == "clear":
        done = store.unpin_baseline(args.model_version)
        console.print(f"baseline of {args.model_version} {'unpinned' if done else 'was not pinned'}")
        return 0
    run_ids, pinned = store.baseline_runs(args.model_version, args.first)
    columns = trend_columns(store.trend(model_version=args.model_version))
    values = own_levels(store, args.model_version, [c.metric for c in columns], args.first)
    reference = reference_of(store, args.model_version)
    if not run_ids:
        console.print(f"no runs of model version {args.model_version} yet")
        return 0
    how = "pinned" if pinned else f"median of the first {args.first} runs"
    console.print(f"own baseline of {args.model_version} (drift; {how}): runs {run_ids}")
    for col in columns:
        console.print(f"  {col.heading:>22}: {_fmt(values[col.metric])}")
    if reference is None:
        console.print("reference version: none (the first version stored)")
    else:
        console.print(f"reference version: {reference[0]} ({reference[1]}; its jobs pooled, unpaired)")
    return 0


def reference_main(args: argparse.Namespace) -> int:
    store = _open(args)
    if args.previous:
        done = store.unpin_reference(args.model_version)
        print(f"reference of {args.model_version}: {'the previous version' if done else 'was not pinned'}")
        return 0
    try:
        store.pin_reference(args.model_version, args.reference, args.note)
    except ValueError as exc:  # a version that has no stored runs, or is the version itself
        raise InputError(str(exc)) from None
    print(f"reference of {args.model_version} pinned to {args.reference}")
    return 0


def add_backtest_main(args: argparse.Namespace) -> int:
    from ropewatch_validator.ops.baselines import register_backtest

    try:
        text = Path(args.file).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{args.file}: cannot read ({exc.strerror})") from None
    pairs = register_backtest(_open(args), args.file, text)
    for a, b in pairs:
        print(f"registered the paired backtest of {b} against {a}")
    return 0
