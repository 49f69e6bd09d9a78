"""`ropewatch checkpoint import`: a foreign state dict rewritten into the checkpoint contract.

The source is what another trainer saved: a bare state dict (name -> tensor), or a dict holding it under
``model``, ``state_dict`` or ``model_state_dict`` (the first present), optionally with ``config``,
``labels``, ``thr`` and ``version`` (top level or in ``config``, as the contract reads them). Weight names
are rewritten by prefix (``OLD=NEW``, tried in the order given, the first matching prefix wins; ``NEW``
may be empty to strip one, e.g. ``module.=``). Options given on the command line replace what the source
says. The result goes through the contract's own validation and dry forward pass before it is written
(atomically), so a file this command writes is one the function loads. A source without ``thr`` (and no
``--thr``) is still written, with no ``thr``: the function refuses it, ``backtest`` judges it with
``--thr`` or ``--thr-from-split``; the returned summary says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ropewatch_core.errors import InputError
from ropewatch_core.model.checkpoint import (
    CheckpointError,
    normalised,
    read_checkpoint,
    save_checkpoint,
    validate,
)
from ropewatch_core.model.classifier import ModelConfig

WEIGHT_KEYS = ("model", "state_dict", "model_state_dict")  # where trainers keep the weights, in this order


@dataclass(frozen=True)
class Imported:
    """What was written: the file, its version, labels, thr (None: not servable) and renamed keys."""

    path: str
    version: str | None
    labels: tuple[str, ...]
    thr: float | None
    renamed: int
    n_weights: int


def parse_maps(items: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """``OLD=NEW`` strings as pairs; anything else is one InputError line."""
    out = []
    for item in items:
        if "=" not in item:
            raise InputError(f"--map takes OLD=NEW (a weight-name prefix and its replacement), got {item!r}")
        old, new = item.split("=", 1)
        out.append((old, new))
    return tuple(out)


def rename(state: dict, maps: Sequence[tuple[str, str]]) -> tuple[dict, int]:
    """``state`` with each name's first matching prefix replaced; two names landing on one is an error."""
    out: dict = {}
    renamed = 0
    for name, tensor in state.items():
        new = name
        for old, repl in maps:
            if name.startswith(old):
                new, renamed = repl + name[len(old) :], renamed + 1
                break
        if new in out:
            raise InputError(f"--map sends two weights to {new!r}")
        out[new] = tensor
    return out, renamed


def _weights(raw: object, src: str) -> tuple[dict, dict]:
    """(state dict, the rest of the source dict) from either layout."""
    if isinstance(raw, dict) and raw and all(isinstance(v, torch.Tensor) for v in raw.values()):
        return raw, {}
    if isinstance(raw, dict):
        for key in WEIGHT_KEYS:
            state = raw.get(key)
            if isinstance(state, dict):
                return state, {k: v for k, v in raw.items() if k not in WEIGHT_KEYS}
    raise CheckpointError(
        f"checkpoint {src}: no state dict found (a dict of tensors, or one under {', '.join(WEIGHT_KEYS)})"
    )


def import_checkpoint(
    src: str | Path,
    out: str | Path,
    maps: Sequence[tuple[str, str]],
    *,
    labels: Sequence[str] | None = None,
    thr: float | None = None,
    version: str | None = None,
) -> Imported:
    """Convert ``src`` into the contract at ``out``; nothing is written unless the result validates."""
    raw, _ = read_checkpoint(src)
    state, rest = _weights(raw, str(src))
    state, renamed = rename(state, maps)
    flat = normalised({**rest, "config": rest.get("config", ModelConfig().to_dict())}, str(src))
    new = {k: v for k, v in flat.items() if k not in ("labels", "thr", "version")}
    new["state_dict"] = state
    given = {"labels": None if labels is None else list(labels), "thr": thr, "version": version}
    for key, value in given.items():
        chosen = value if value is not None else flat.get(key)
        if chosen is not None:
            new[key] = chosen
    validate(new, str(src), require_thr=False)
    try:
        save_checkpoint(new, out)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return Imported(
        path=str(out),
        version=new.get("version"),
        labels=tuple(new["labels"]),
        thr=new.get("thr"),
        renamed=renamed,
        n_weights=len(state),
    )
