"""`ropewatch card`: the team's model card from a backtest result or from a scores CSV.

A scores CSV (a training script's test set, or any scorer outside ropewatch) has one row per person:
``truth`` (wrong/correct) and ``p_correct``, optionally ``image`` (a frame file), ``box`` (x1,y1,x2,y2)
and ``frame`` (the cluster the bootstrap resamples; without it the image, else each row alone). It is
turned into the same ``BacktestResult`` the backtest writes (one version, its thr from ``--thr``), so
both get one card. Rows whose truth is neither value are counted and left out, never dropped silently.
Both files are written atomically; on any error nothing is written.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ropewatch_core.decision import CORRECT, WRONG
from ropewatch_core.errors import InputError
from ropewatch_core.files import atomic_write
from ropewatch_core.image import ImageError
from ropewatch_core.jsonio import utc_iso
from ropewatch_validator.evaluation.compare import N_BOOT, SEED
from ropewatch_validator.render import card
from ropewatch_validator.render.backtest_model import (
    BacktestResult,
    DataSource,
    Person,
    VersionSpec,
    assemble,
)
from ropewatch_validator.render.thumbs import Thumbnail, cut, region

SCORES_COLUMNS = ("truth", "p_correct")
OPTIONAL_COLUMNS = ("image", "box", "frame")


@dataclass(frozen=True)
class CardRequest:
    source: Path  # backtest.json or a scores .csv
    out: Path
    version: str | None = None  # the card's version; a scores CSV's version name
    baseline: str | None = None
    thr: float | None = None  # required for a scores CSV
    images: Path | None = None  # folder where persons' frame_name files are found
    config: Path | None = None  # a checkpoint config block (JSON) for the chosen version
    n_boot: int = N_BOOT
    seed: int = SEED


@dataclass(frozen=True)
class CardFiles:
    html: Path
    md: Path
    version: str
    baseline: str | None
    pictures: str  # why pictures are missing, "" when shown


def _box(text: str, row: int) -> list[float] | None:
    if not text:
        return None
    parts = [x for x in re.split(r"[\s,;\[\]()]+", text) if x]
    try:
        box = [float(x) for x in parts]
    except ValueError:
        box = []
    if len(box) != 4 or not all(math.isfinite(x) for x in box) or box[2] <= box[0] or box[3] <= box[1]:
        raise InputError(f"row {row}: box {text[:60]!r} is not x1,y1,x2,y2 with x2 > x1 and y2 > y1")
    return box


def read_scores(path: Path, version: str) -> tuple[list[Person], dict[str, int]]:
    """The persons of a scores CSV and the rows left out, by reason."""
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"cannot read scores CSV {path}: {' '.join(str(exc).split())[:200]}") from None
    missing = [c for c in SCORES_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {missing} (has {list(df.columns)[:12]})")
    p = pd.to_numeric(df["p_correct"], errors="coerce")
    bad = np.flatnonzero(~((p >= 0) & (p <= 1)).to_numpy())
    if bad.size:
        value = df["p_correct"].iloc[bad[0]]
        raise InputError(f"{path}: row {bad[0] + 2}: p_correct {value!r} is not a number in [0, 1]")
    col = {
        c: df[c].str.strip().tolist() if c in df.columns else [""] * len(df)
        for c in ("truth", *OPTIONAL_COLUMNS)
    }
    key = [f or im for f, im in zip(col["frame"], col["image"])]  # the frame, else the image
    codes = pd.factorize(pd.Series([k or None for k in key], dtype=object))[0]
    alone = codes < 0  # no frame named: the row is a frame of its own
    codes[alone] = codes.max(initial=-1) + 1 + np.arange(int(alone.sum()))
    keep = [t in (WRONG, CORRECT) for t in col["truth"]]
    skipped: dict[str, int] = {}
    for t, k in zip(col["truth"], keep):
        if not k:
            skipped[f"truth {t!r}"] = skipped.get(f"truth {t!r}", 0) + 1
    persons = [
        Person(
            frame=int(codes[i]),
            frame_name=key[i] or None,
            box=_box(col["box"][i], i + 2),
            truth=col["truth"][i],
            p_correct={version: float(p.iloc[i])},
            image=col["image"][i] or None,
        )
        for i in range(len(df))
        if keep[i]
    ]
    if not persons:
        raise InputError(f"{path}: no row has truth {WRONG!r} or {CORRECT!r} (left out: {skipped})")
    return persons, skipped


def scores_result(req: CardRequest) -> BacktestResult:
    """A one-version backtest result from a scores CSV."""
    if req.thr is None:
        raise InputError("a scores CSV needs --thr (the threshold on P(correct) the version decides with)")
    if not 0.0 <= req.thr <= 1.0:
        raise InputError(f"--thr must be in [0, 1], got {req.thr}")
    name = req.version or req.source.stem
    persons, skipped = read_scores(req.source, name)
    spec = VersionSpec(version=name, thr=req.thr, thr_source="--thr", config=read_config(req.config))
    src = DataSource(kind="scores", path=req.source.name)
    return assemble(
        created=utc_iso(),
        source=src,
        specs=[spec],
        persons=persons,
        skipped=skipped,
        n_boot=req.n_boot,
        seed=req.seed,
    )


def read_config(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"cannot read config {path}: {' '.join(str(exc).split())[:200]}") from None
    if not isinstance(config, dict):
        raise InputError(f"{path}: a config block is a JSON object, got {type(config).__name__}")
    return config


def thumbnails(
    result: BacktestResult, indices: list[int], base: Path, images: Path | None
) -> dict[int, Thumbnail]:
    """Crops around the persons at ``indices``: the person's ``image`` (relative to the input's
    folder), else ``frame_name`` inside ``images``. A frame that cannot be read gets its reason."""
    out = {}
    for i in indices:
        q = result.persons[i]
        if q.image:
            file = base / q.image
        elif images is not None and q.frame_name:
            file = images / q.frame_name
        else:
            continue
        boxes = [q.box] if q.box else []
        try:
            out[i] = cut(file.read_bytes(), boxes) if boxes else Thumbnail(region([]), error="no box")
        except (OSError, ImageError) as exc:
            out[i] = Thumbnail(region(boxes), error=f"{file.name}: {' '.join(str(exc).split())[:160]}")
    return out


def make_card(req: CardRequest) -> CardFiles:
    """Load the input, render card.html and card.md, write both into ``req.out``."""
    if req.source.suffix.lower() == ".csv":
        result = scores_result(req)
    else:
        if req.thr is not None:
            raise InputError("--thr is for a scores CSV; a backtest result carries each version's thr")
        result = BacktestResult.load(req.source)
        if req.config is not None:
            chosen = result.version(req.version or result.names()[-1])
            versions = [
                v.model_copy(update={"config": read_config(req.config)}) if v is chosen else v
                for v in result.versions
            ]
            result = result.model_copy(update={"versions": versions})
    name = result.version(req.version or result.names()[-1]).version
    wanted = card.pick_samples(result) + card.pick_audit(result, name)
    thumbs = thumbnails(result, wanted, req.source.parent, req.images)
    view = card.card_view(result, name, req.baseline, thumbs)
    html, md = card.html_page(view), card.markdown(view)
    try:
        req.out.mkdir(parents=True, exist_ok=True)
        atomic_write(req.out / "card.html", html)
        atomic_write(req.out / "card.md", md)
    except OSError as exc:
        raise InputError(f"cannot write into {req.out}: {exc.strerror or exc}") from None
    return CardFiles(
        req.out / "card.html", req.out / "card.md", view.chosen.version, view.baseline, view.pictures
    )
