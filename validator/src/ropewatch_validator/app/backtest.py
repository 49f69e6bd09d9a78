"""`ropewatch backtest`: judge model versions on the same reviewed persons, paired.

Data: a CVAT scope (jobs, tasks, projects; the reference persons are the rectangles of the validated
sources, ``manual``/``file``/``consensus`` as validate-job reads them, whose ``safety_rope_use`` is set)
or a folder of ``ropewatch dataset build`` (its ``val`` manifest by default). Every version gets the
same reference boxes (the classifier is isolated from the detector) on the same frames, fetched once
through the frame cache; :mod:`ropewatch_validator.learn.backtest` runs the models and caches their
answers, :func:`ropewatch_validator.render.backtest_model.assemble` computes metrics, CIs and pairs.

Versions, in the order given (the first is every pair's baseline ``a`` in turn, the later the
candidates ``b``): an expert checkpoint alone, or a cascade (its fast filter and band in front). A
cascade's P(correct) for a person is the expert's where the filter defers, and 1 or 0 where the filter
decides ``correct`` or ``wrong``: thresholding it at the expert's thr gives the function's decision
exactly, and its AP ranks the filter's decisions at the two ends.

Threshold per version: ``--thr`` given with it, else the checkpoint's ``thr``, else (with
``--thr-from-split FRACTION``) the F1(correct)-maximising one on that share of the frames (seeded),
in which case every version is scored on the other frames only, so all stay paired. A version with no
threshold from any of these is refused before anything is scored.
"""

from __future__ import annotations

import csv
import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from ropewatch_core.errors import InputError
from ropewatch_core.files import atomic_write
from ropewatch_core.image import ImageError
from ropewatch_core.jsonio import utc_iso
from ropewatch_core.spec import ATTRIBUTE, ATTRIBUTE_VALUES
from ropewatch_validator.cvat.fetch import Connection, fetch_job, find_jobs
from ropewatch_validator.cvat.frames import job_frame_fetcher
from ropewatch_validator.evaluation.match import Settings, match, select
from ropewatch_validator.evaluation.measure import detection
from ropewatch_validator.evaluation.metrics import pr_curve
from ropewatch_validator.learn import backtest as lb
from ropewatch_validator.render import card
from ropewatch_validator.render.backtest_model import (
    N_BOOT,
    SEED,
    BacktestResult,
    Cascade,
    DataSource,
    Detector,
    Person,
    Timing,
    VersionSpec,
    assemble,
)
from ropewatch_validator.render.thumbs import Thumbnail, cut, region

WRONG, CORRECT = ATTRIBUTE_VALUES
Progress = Callable[[int], Callable[[int], None]]  # total frames -> advance(n)


@dataclass(frozen=True)
class CvatScope:
    jobs: tuple[int, ...] = ()
    tasks: tuple[int, ...] = ()
    projects: tuple[int, ...] = ()


@dataclass(frozen=True)
class Request:
    """Everything a backtest needs; exactly one of ``scope`` (with a connection) and ``dataset``."""

    candidates: tuple[lb.Candidate, ...]
    scope: CvatScope | None = None
    dataset: Path | None = None
    dataset_split: str = "val"
    detectors: tuple[lb.DetectorSpec, ...] = ()
    detector_threshold: float = 0.5
    thr_from_split: float | None = None
    split_seed: int = 0
    cache_dir: Path | None = None
    ref_sources: tuple[str, ...] = Settings().ref_sources
    n_boot: int = N_BOOT
    seed: int = SEED
    device: str = "cpu"


@dataclass(frozen=True)
class RefFrame:
    """One frame with reference persons: every box for detection, the valued ones for the classifier."""

    index: int  # position in the backtest's frame list (the threshold split draws these)
    number: int  # the frame number within its job (CVAT's frame; a dataset's manifest ``frame``)
    name: str
    job_id: int | None
    fetch: Callable[[], bytes]
    boxes: np.ndarray  # persons with a value, scored by every version
    truth: tuple[str, ...]
    object_ids: tuple[int | None, ...]
    all_boxes: np.ndarray  # every reference person box of the frame (detection)


@dataclass
class Collected:
    frames: list[RefFrame]
    source: DataSource
    skipped: Counter = field(default_factory=Counter)


def _int_or_none(value: object) -> int | None:
    try:
        out = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None
    return None if isinstance(value, float) and math.isnan(value) else out


def cvat_frames(
    conn: Connection, scope: CvatScope, ref_sources: tuple[str, ...], cache: Path | None
) -> Collected:
    """The reference frames of every annotation job of ``scope``, in job then frame order."""
    jobs = set(scope.jobs)
    for key, ids in (("task_id", scope.tasks), ("project_id", scope.projects)):
        for i in ids:
            jobs |= {int(j["id"]) for j in find_jobs(conn, job_type="annotation", **{key: i})}
    if not jobs:
        raise InputError("no jobs given (JOB_ID, --job, --task or --project)")
    settings = Settings(ref_sources=ref_sources)
    out = Collected(
        [],
        DataSource(
            kind="cvat",
            host=conn.host,
            jobs=sorted(scope.jobs),
            tasks=list(scope.tasks),
            projects=list(scope.projects),
        ),
    )
    for job_id in sorted(jobs):
        job = fetch_job(conn, job_id)
        refs = select(job.shapes, settings, settings.ref_sources)
        valued = refs[ATTRIBUTE].isin(ATTRIBUTE_VALUES)
        out.skipped["no_value"] += int((~valued).sum())
        fetch = job_frame_fetcher(conn, job, cache)
        names = dict(zip(job.frames["frame"].astype(int), job.frames["name"].astype(str)))
        for frame, group in refs.groupby("frame", sort=True):
            keep = group[valued.loc[group.index]]
            if keep.empty:
                continue
            out.frames.append(
                RefFrame(
                    index=len(out.frames),
                    number=int(frame),
                    name=f"job {job_id} frame {int(frame)} ({names.get(int(frame), '?')})",
                    job_id=job_id,
                    fetch=partial(fetch, int(frame)),
                    boxes=keep[["x1", "y1", "x2", "y2"]].to_numpy(np.float64),
                    truth=tuple(str(v) for v in keep[ATTRIBUTE]),
                    object_ids=tuple(_int_or_none(v) for v in keep["shape_id"]),
                    all_boxes=group[["x1", "y1", "x2", "y2"]].to_numpy(np.float64),
                )
            )
    return out


def dataset_frames(folder: Path, split: str) -> Collected:
    """The persons of ``{split}_manifest.csv`` of a `dataset build` folder, grouped by kept frame.
    Only the manifest's persons (those with a value) are known here, so they are also the detection
    reference."""
    splits = ("train", "val") if split == "all" else (split,)
    rows: list[dict[str, str]] = []
    for name in splits:
        path = Path(folder) / f"{name}_manifest.csv"
        if not path.is_file():
            raise InputError(f"{path}: no such manifest (build the folder with `ropewatch dataset build`)")
        with path.open(newline="", encoding="utf-8") as fh:
            rows += list(csv.DictReader(fh))
    out = Collected([], DataSource(kind="dataset", path=str(folder)))
    by_frame: dict[str, list[dict[str, str]]] = {}
    for i, row in enumerate(rows):
        if row.get("y") not in ("0", "1") or not row.get("frame_file"):
            raise InputError(f"{folder}: manifest row {i + 1} lacks frame_file or a y of 0/1")
        by_frame.setdefault(row["frame_file"], []).append(row)
    for frame_file, group in sorted(by_frame.items()):
        path = Path(folder) / frame_file
        if not path.is_file():
            out.skipped["frame_missing"] += len(group)
            continue
        boxes = np.array([[float(r[k]) for k in ("x1", "y1", "x2", "y2")] for r in group])
        out.frames.append(
            RefFrame(
                index=len(out.frames),
                number=_int_or_none(group[0].get("frame")) or 0,
                name=frame_file,
                job_id=_int_or_none(group[0].get("job")),
                fetch=path.read_bytes,
                boxes=boxes,
                truth=tuple(CORRECT if r["y"] == "1" else WRONG for r in group),
                object_ids=tuple(_int_or_none(r.get("shape_id")) for r in group),
                all_boxes=boxes,
            )
        )
    return out


def f1_threshold(truth: Sequence[str], p: np.ndarray) -> float:
    """The threshold on P(correct) with the highest F1 of ``correct`` (the highest such on ties)."""
    hits = np.array([t == CORRECT for t in truth])
    if not hits.any():
        raise InputError("--thr-from-split: the split has no `correct` person to choose a threshold on")
    curve = pr_curve(np.asarray(p, np.float64), hits)
    prec, rec = curve["precision"], curve["recall"]
    f1 = np.where(prec + rec > 0, 2 * prec * rec / np.where(prec + rec > 0, prec + rec, 1), 0.0)
    return float(curve["thresholds"][int(np.argmax(f1))])


def split_frames(n_frames: int, fraction: float, seed: int) -> np.ndarray:
    """Mask of the frames that choose the thresholds: ``fraction`` of them (at least one, never all),
    drawn with a seeded generator."""
    if not 0.0 < fraction < 1.0:
        raise InputError(f"--thr-from-split takes a fraction in (0, 1), got {fraction}")
    if n_frames < 2:
        raise InputError(f"--thr-from-split needs at least two frames, got {n_frames}")
    k = min(n_frames - 1, max(1, round(fraction * n_frames)))
    mask = np.zeros(n_frames, dtype=bool)
    mask[np.random.default_rng(seed).choice(n_frames, size=k, replace=False)] = True
    return mask


def _names(loaded: Sequence[lb.Loaded]) -> list[str]:
    """Unique version names: the checkpoint's version, ``+filter@lo-hi`` for a cascade, ``#n`` on repeats."""
    names: list[str] = []
    for item in loaded:
        name = item.expert.version
        if item.filter is not None and item.band is not None:
            name += f"+{item.filter.version}@{item.band[0]:g}-{item.band[1]:g}"
        base, n = name, 2
        while name in names:
            name, n = f"{base}#{n}", n + 1
        names.append(name)
    return names


def _version_p(item: lb.Loaded, scores: lb.FrameScores, device: str) -> list[float | None]:
    """P(correct) of a version on one frame's persons (see the module doc for cascades)."""
    expert = scores.p[lb.model_key(item.expert.sha256, device)]
    if item.filter is None or item.band is None:
        return expert
    lo, hi = item.band
    out: list[float | None] = []
    for pe, pf in zip(expert, scores.p[lb.model_key(item.filter.sha256, device)]):
        out.append(None if pe is None or pf is None else 1.0 if pf >= hi else 0.0 if pf <= lo else pe)
    return out


def _timing(item: lb.Loaded, all_scores: Sequence[lb.FrameScores], device: dict, device_name: str) -> Timing:
    """Mean ms per frame of the version: the expert's, or for a cascade the filter's plus the
    expert's on the frames where the filter defers someone (the only ones the function passes on)."""
    ok = [s for s in all_scores if s.error is None]
    if not ok:
        return Timing(ms_per_frame=0.0, **device)
    expert = np.array([s.ms[lb.model_key(item.expert.sha256, device_name)] for s in ok])
    if item.filter is None or item.band is None:
        return Timing(ms_per_frame=round(float(expert.mean()), 3), **device)
    lo, hi = item.band
    fkey = lb.model_key(item.filter.sha256, device_name)
    filt = np.array([s.ms[fkey] for s in ok])
    deferred = np.array([any(p is not None and lo < p < hi for p in s.p[fkey]) for s in ok], dtype=bool)
    return Timing(ms_per_frame=round(float((filt + expert * deferred).mean()), 3), **device)


def _detectors(
    request: Request, frames: Sequence[RefFrame], all_scores: Sequence[lb.FrameScores]
) -> list[Detector]:
    """Recall, precision (at ``detector_threshold``) and AP (IoU 0.5, every score down to the cache's
    floor; Σ ΔR·P over all reference persons, as evaluation.measure's AP) per detector."""
    out = []
    for spec in request.detectors:
        key = lb.detector_key(spec, request.device)
        pred_rows, ref_rows, ms = [], [], []
        for frame, s in zip(frames, all_scores):
            if s.error is not None:
                continue
            ms.append(s.ms[key])
            pred_rows += [(frame.index, *d) for d in s.detections[key]]
            ref_rows += [(frame.index, *b) for b in frame.all_boxes.tolist()]
        pred = pd.DataFrame(pred_rows, columns=["frame", "x1", "y1", "x2", "y2", "score"])
        ref = pd.DataFrame(ref_rows, columns=["frame", "x1", "y1", "x2", "y2"])
        pred, ref = pred.sort_values("frame", kind="stable"), ref.sort_values("frame", kind="stable")
        matched, _ = match(pred.reset_index(drop=True), ref.reset_index(drop=True), 0.5)
        curve = pr_curve(matched["score"].to_numpy(float), matched["match"].to_numpy() >= 0, len(ref))
        ap = curve["ap"] if len(ref) and len(matched) else None
        kept = pred[pred["score"] >= request.detector_threshold].reset_index(drop=True)
        at_thr = detection(*match(kept, ref.reset_index(drop=True), 0.5))
        out.append(
            Detector(
                arch=spec.arch,
                weights=spec.weights.name,
                recall=at_thr["recall"],
                precision=at_thr["precision"],
                ap=ap,
                ms_per_frame=round(float(np.mean(ms)), 3) if ms else None,
                n_reference=len(ref),
                n_detected=len(kept),
            )
        )
    return out


@dataclass(frozen=True)
class Backtest:
    """The result and the crops the page shows (sample inferences and the FP audit), by person."""

    result: BacktestResult
    thumbnails: dict[int, Thumbnail]


def _thumbnails(result: BacktestResult, fetches: Sequence[Callable[[], bytes]]) -> dict[int, Thumbnail]:
    """Crops of the persons the card shows (its own choice of samples and audit), from the frames
    already in the frame cache; a frame that cannot be cut gets its reason."""
    wanted = card.pick_samples(result) + card.pick_audit(result, result.names()[-1])
    out = {}
    for i in wanted:
        box = result.persons[i].box or []
        try:
            out[i] = cut(fetches[i](), [box])
        except (OSError, ImageError) as exc:
            out[i] = Thumbnail(region([box]), error=" ".join(str(exc).split())[:160])
    return out


def run_backtest(
    request: Request, conn: Connection | None = None, progress: Progress | None = None
) -> Backtest:
    """Score every version on the same persons and assemble backtest.json's model."""
    if not request.candidates:
        raise InputError("no checkpoint given (--checkpoint PATH, repeatable)")
    if request.thr_from_split is not None and not 0.0 < request.thr_from_split < 1.0:
        raise InputError(f"--thr-from-split takes a fraction in (0, 1), got {request.thr_from_split}")
    lb.check_device(request.device)
    loaded = lb.load(request.candidates, request.device)
    need_split = [i for i, item in enumerate(loaded) if item.expert.thr_source == "none"]
    if need_split and request.thr_from_split is None:
        path = loaded[need_split[0]].expert.path
        raise InputError(
            f"checkpoint {path} stores no thr: give --thr X after it, or --thr-from-split FRACTION"
        )
    if request.dataset is not None:
        collected = dataset_frames(request.dataset, request.dataset_split)
    elif request.scope is not None and conn is not None:
        collected = cvat_frames(conn, request.scope, request.ref_sources, request.cache_dir)
    else:
        raise InputError("give a CVAT scope (JOB_ID, --job, --task, --project) or --dataset DIR")
    frames = collected.frames
    if not frames:
        raise InputError("no reference person with a value to score")
    advance = progress(len(frames)) if progress is not None else None
    all_scores = list(
        lb.score_all(loaded, request.detectors, frames, request.cache_dir, advance, request.device)
    )
    names = _names(loaded)
    skipped = Counter(collected.skipped)
    rows: list[tuple[RefFrame, int, dict[str, float]]] = []
    for frame, s in zip(frames, all_scores):
        if s.error is not None:
            skipped["frame_undecodable"] += len(frame.truth)
            continue
        per_version = [_version_p(item, s, request.device) for item in loaded]
        for k in range(len(frame.truth)):
            ps = [v[k] for v in per_version]
            if any(p is None for p in ps):
                skipped["box_outside_frame"] += 1
                continue
            rows.append((frame, k, {n: float(p) for n, p in zip(names, ps) if p is not None}))
    thrs = {n: item.expert.thr for n, item in zip(names, loaded)}
    sources = {n: item.expert.thr_source for n, item in zip(names, loaded)}
    if request.thr_from_split is not None:
        chooser = split_frames(len(frames), request.thr_from_split, request.split_seed)
        calib = [r for r in rows if chooser[r[0].index]]
        for i in need_split:
            n = names[i]
            thrs[n] = f1_threshold([r[0].truth[r[1]] for r in calib], np.array([r[2][n] for r in calib]))
            sources[n] = "validation split"
        skipped["threshold_split"] += len(calib)
        rows = [r for r in rows if not chooser[r[0].index]]
    if not rows:
        raise InputError("no person left to score (see the skipped counts)")
    device = lb.device_info(request.device)
    specs = [
        VersionSpec(
            version=n,
            sha256=item.expert.sha256,
            path=Path(item.expert.path).name,
            thr=thrs[n],
            thr_source=sources[n],  # type: ignore[arg-type]
            labels=list(item.expert.labels),
            head=lb.head_of(item.expert),
            cascade=None
            if item.filter is None or item.band is None
            else Cascade(filter_sha256=item.filter.sha256, band=item.band),
            timing=_timing(item, all_scores, device, request.device),
            config={**item.expert.config.to_dict(), **item.expert.training},
        )
        for n, item in zip(names, loaded)
    ]
    persons = [
        Person(
            frame=frame.number,
            frame_name=frame.name,
            box=[round(float(v), 2) for v in frame.boxes[k]],
            truth=frame.truth[k],
            p_correct=p,
            job_id=frame.job_id,
            object_id=frame.object_ids[k],
        )
        for frame, k, p in rows
    ]
    result = assemble(
        created=utc_iso(),
        source=collected.source,
        specs=specs,
        persons=persons,
        skipped={k: v for k, v in sorted(skipped.items()) if v},
        detectors=_detectors(request, frames, all_scores),
        n_boot=request.n_boot,
        seed=request.seed,
    )
    return Backtest(result, _thumbnails(result, [frame.fetch for frame, _, _ in rows]))


def write_outputs(backtest: Backtest, out: Path) -> tuple[Path, Path]:
    """``backtest.json`` and ``backtest.html`` (the model card of the last version against the one
    before it, with every version side by side: render.card) in ``out``, each written atomically."""
    result = backtest.result
    json_path, html_path = out / "backtest.json", out / "backtest.html"
    page = card.html_page(card.card_view(result, thumbnails=backtest.thumbnails))
    try:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(json_path, result.to_json() + "\n")
        atomic_write(html_path, page)
    except OSError as exc:
        raise InputError(f"cannot write {out}: {exc.strerror or exc}") from None
    return json_path, html_path
