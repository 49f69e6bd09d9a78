"""The benchmark protocol of bench/README.md, written once; every bench/*.py goes through it.

- ``add_arguments`` gives each bench ``--allow-noisy`` and ``--max-load``;
- ``start`` prints nproc and the load average (and the torch/threads setup where torch is used), then
  refuses to run (exit 2, one line on stderr) when the 1-minute load is above the limit, or, with
  ``--allow-noisy``, runs and marks the output NOISY;
- ``interleaved`` runs A/B configurations in turn (ABAB...) so a change of load hits all alike, and
  ``ratio_line`` prints each configuration against the first;
- ``finish`` prints the load average at the end.

The figures are only comparable between runs taken under the protocol on a quiet machine: never while
tests or other benchmarks run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

MAX_LOAD = 1.5  # 1-minute load average above which a run is refused (or marked NOISY)
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TORCH_THREADS")
T = TypeVar("T")
X = TypeVar("X")


@dataclass(frozen=True)
class Session:
    name: str
    noisy: bool
    max_load: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-noisy",
        action="store_true",
        help="run even when the 1-minute load is above --max-load, and mark the output NOISY",
    )
    parser.add_argument(
        "--max-load",
        type=float,
        default=MAX_LOAD,
        help=f"1-minute load average allowed at start (default {MAX_LOAD}; below 0: every run is noisy)",
    )


def _load() -> tuple[float, float, float]:
    """The load averages as printed (2 decimals): the NOISY decision is taken on the printed figure."""
    one, five, fifteen = (round(v, 2) for v in os.getloadavg())
    return one, five, fifteen


def _shown(load: tuple[float, float, float]) -> str:
    return " ".join(f"{v:.2f}" for v in load)


def threads_setup(device: str = "cpu") -> str:
    """torch's version and thread counts and the environment variables that set them."""
    import torch

    env = ", ".join(f"{k}={os.environ.get(k, 'unset')}" for k in THREAD_ENV)
    return (
        f"torch {torch.__version__}, get_num_threads {torch.get_num_threads()}, "
        f"get_num_interop_threads {torch.get_num_interop_threads()}, {env}, device {device}"
    )


def start(name: str, args: argparse.Namespace, torch_device: str | None = None) -> Session:
    """Check the load before anything else runs, then print the run's setup (``torch_device``: the
    device when the bench uses torch, None when it does not)."""
    load = _load()
    load1 = load[0]
    noisy = load1 > args.max_load
    if noisy and not args.allow_noisy:
        print(
            f"{name}: not run: 1-minute load {load1:.2f} is above {args.max_load:g} (something else is "
            "running; see bench/README.md), or pass --allow-noisy to run and mark the figures NOISY",
            file=sys.stderr,
        )
        raise SystemExit(2)
    print(f"# protocol: {name}, nproc {os.cpu_count()}, load average at start {_shown(load)} (1/5/15 min)")
    if noisy:
        print(f"# NOISY: 1-minute load {load1:.2f} > {args.max_load:g} at start; figures are not comparable")
    if torch_device is not None:
        print(f"# protocol: {threads_setup(torch_device)}")
    sys.stdout.flush()
    return Session(name, noisy, args.max_load)


def finish(session: Session) -> None:
    load = _load()
    rose = (
        f"; NOISY: 1-minute load above {session.max_load:g} at the end" if load[0] > session.max_load else ""
    )
    print(f"# protocol: {session.name}, load average at end {_shown(load)}{rose}", flush=True)


def interleaved(configs: Mapping[str, Callable[[X], T]], inputs: Sequence[X]) -> dict[str, list[T]]:
    """Each input (a frame, a round number) through every configuration in turn (A B A B ...), so a
    change of load during the run hits all configurations alike; the results per configuration."""
    out: dict[str, list[T]] = {name: [] for name in configs}
    for x in inputs:
        for name, run in configs.items():
            out[name].append(run(x))
    return out


def p50_p95(samples: Sequence[float]) -> tuple[float, float]:
    return float(np.median(samples)), float(np.percentile(samples, 95))


def ratio_line(what: str, values: Mapping[str, float], higher_is_better: bool = True) -> str:
    """``# ratio WHAT vs FIRST: B 1.23x, C 0.98x`` (> 1 means better than the first configuration)."""
    names = list(values)
    base = values[names[0]]
    parts = []
    for n in names[1:]:
        a, b = (values[n], base) if higher_is_better else (base, values[n])
        parts.append(f"{n} {a / b:.2f}x" if b > 0 else f"{n} n/a")
    return f"# ratio {what} vs {names[0]}: {', '.join(parts)}"


@dataclass(frozen=True)
class Exactness:
    """One configuration's decisions against the reference's on the same persons."""

    persons: int
    max_abs_delta: float  # largest |logit - reference logit|
    flips: int  # persons on the other side of thr than in the reference
    reference_correct: int  # persons the reference puts on the "correct" side (the check needs both sides)


def exactness(
    reference_z: Sequence[float], z: Sequence[float], reference_side: Sequence[bool], side: Sequence[bool]
) -> Exactness:
    a, b = np.asarray(reference_z, np.float64), np.asarray(z, np.float64)
    ra, sb = np.asarray(reference_side, bool), np.asarray(side, bool)
    delta = float(np.abs(a - b).max()) if len(a) else 0.0
    return Exactness(len(a), delta, int((ra != sb).sum()), int(ra.sum()))


def exactness_line(name: str, reference: str, e: Exactness) -> str:
    return (
        f"# exactness {name} vs {reference}: {e.persons} persons ({e.reference_correct} correct, "
        f"{e.persons - e.reference_correct} wrong in {reference}), max |logit delta| {e.max_abs_delta:.3g}, "
        f"{e.flips} on the other side of thr"
    )
