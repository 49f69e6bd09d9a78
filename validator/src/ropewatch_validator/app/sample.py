"""``ropewatch review sample`` and ``review estimate``: a stratified sample of a task's frames for people
to annotate (a Ground Truth job), and what it says about the whole task.

The design (stated, stored, and what the estimator weights by). Every frame of the task's annotation
jobs is in exactly one stratum, decided from traced reports (``validate-job --logs``) of those jobs:

1. ``uncertain``: a person whose P(correct) is within ``band`` of the threshold (where the model
   hesitates, and where relabelling teaches most);
2. ``filter``: otherwise, every traced person of the frame was decided by the fast filter alone
   (the cascade's own errors are measured only here: the expert never saw these persons);
3. ``rest``: every other frame, untraced ones included (the uniform random share).

``size`` frames are drawn: ``uncertain_share`` of them from stratum 1, ``filter_share`` from 2 (each
capped by the stratum's size) and the remainder from 3, each by simple random sampling without
replacement (numpy, ``seed``). A frame of stratum h is in the sample with probability n_h / N_h,
stored per frame; ``review estimate`` turns the GT job's validation into Horvitz-Thompson estimates
for the task (``evaluation.estimate``). Without the weights only the sampled frames are described --
and they over-represent the hard ones by design.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ropewatch_core.errors import InputError
from ropewatch_validator.evaluation.estimate import frame_counts, task_estimates
from ropewatch_validator.ops.loop_store import SampledFrame
from ropewatch_validator.render.model import Report
from ropewatch_validator.render.report import objects_frame
from ropewatch_validator.trace.model import TraceObject

if TYPE_CHECKING:
    from ropewatch_validator.cvat.fetch import Connection
    from ropewatch_validator.ops.history import HistoryStore

STRATA = ("uncertain", "filter", "rest")


@dataclass(frozen=True)
class Design:
    size: int
    uncertain_share: float = 0.4
    filter_share: float = 0.2
    band: float = 0.1
    seed: int | None = None

    def check(self) -> None:
        if self.size < 1:
            raise InputError(f"--size must be at least 1, got {self.size}")
        shares = (self.uncertain_share, self.filter_share)
        if not all(0.0 <= s <= 1.0 for s in shares) or sum(shares) > 1.0:
            raise InputError(
                f"--uncertain-share and --filter-share must be in [0, 1] and sum to at most 1, got {shares}"
            )
        if not 0.0 < self.band < 0.5:
            raise InputError(f"--band must be in (0, 0.5), got {self.band}")


@dataclass(frozen=True)
class SampleResult:
    task_id: int
    frames: tuple[SampledFrame, ...]
    strata: dict[str, tuple[int, int]]  # stratum -> (N_h, n_h)
    gt_job_id: int | None  # None on a dry run


def strata_of(frames: Sequence[int], reports: Sequence[Report], band: float) -> dict[int, str]:
    """The stratum of every task frame, from the traced persons of the reports."""
    traced: dict[int, list[TraceObject]] = {}
    for report in reports:
        for o in report.trace.objects if report.trace else []:
            traced.setdefault(o.frame, []).append(o)
    out = {}
    for f in frames:
        objs = traced.get(f, [])
        near = any(
            o.p_correct is not None and o.thr is not None and abs(o.p_correct - o.thr) <= band for o in objs
        )
        by_filter = bool(objs) and all(o.stage == "filter" for o in objs)
        out[f] = "uncertain" if near else "filter" if by_filter else "rest"
    return out


def draw(strata: dict[int, str], design: Design) -> tuple[list[SampledFrame], dict[str, tuple[int, int]]]:
    """Simple random samples without replacement per stratum, of the design's sizes."""
    rng = np.random.default_rng(design.seed)
    members = {h: sorted(f for f, s in strata.items() if s == h) for h in STRATA}
    size = min(design.size, len(strata))
    want = {
        "uncertain": min(len(members["uncertain"]), round(size * design.uncertain_share)),
        "filter": min(len(members["filter"]), round(size * design.filter_share)),
    }
    want["rest"] = min(len(members["rest"]), size - want["uncertain"] - want["filter"])
    picked, sizes = [], {}
    for h in STRATA:
        big_n, n = len(members[h]), want[h]
        if big_n and not n:  # its frames would have inclusion probability 0: no unbiased estimate
            raise InputError(
                f"stratum {h} has {big_n} frames and the design draws none of them: raise --size or its share"
            )
        sizes[h] = (big_n, n)
        if n:
            chosen = rng.choice(members[h], size=n, replace=False)
            picked += [SampledFrame(int(f), h, big_n, n) for f in chosen]
    return sorted(picked, key=lambda s: s.frame), sizes


def _same_task(
    reports: Sequence[Report], host: str | None = None, task: int | None = None
) -> tuple[str, int]:
    hosts = {r.source.host.rstrip("/") for r in reports} | ({host.rstrip("/")} if host else set())
    tasks = {r.source.task for r in reports} | ({task} if task is not None else set())
    if len(hosts) != 1 or len(tasks) != 1 or None in tasks:
        raise InputError(
            f"the reports are not of one task on one server "
            f"(hosts {sorted(hosts)}, tasks {sorted(map(str, tasks))})"
        )
    return hosts.pop(), int(tasks.pop())  # type: ignore[arg-type]


def sample(
    conn: Connection | None,
    store: HistoryStore,
    task_id: int,
    reports: Sequence[Report],
    design: Design,
    *,
    dry_run: bool,
) -> SampleResult:
    """Draw the frames, create the GT job on them (unless ``dry_run``) and store the design."""
    from ropewatch_validator.cvat.fetch import find_jobs
    from ropewatch_validator.cvat.jobs import create_gt_job
    from ropewatch_validator.ops.loop_store import remember_sample

    design.check()
    if conn is None:
        raise InputError("review sample reads the task's jobs from CVAT")
    host, _ = _same_task(reports, conn.host, task_id) if reports else (conn.host, task_id)
    existing = find_jobs(conn, task_id=task_id, job_type="ground_truth")
    if existing:
        raise InputError(
            f"task {task_id} already has a Ground Truth job ({existing[0]['id']}); CVAT allows one"
        )
    jobs = find_jobs(conn, task_id=task_id, job_type="annotation")
    if not jobs:
        raise InputError(f"task {task_id} on {conn.host} has no annotation jobs")
    frames = sorted({f for j in jobs for f in range(int(j["start_frame"]), int(j["stop_frame"]) + 1)})
    picked, sizes = draw(strata_of(frames, reports, design.band), design)
    if dry_run:
        return SampleResult(task_id, tuple(picked), sizes, None)
    gt = create_gt_job(conn, task_id, [f.frame for f in picked])
    remember_sample(store, host, task_id, gt, picked)
    return SampleResult(task_id, tuple(picked), sizes, gt)


def estimate(store: HistoryStore, reports: Sequence[Report]) -> dict[str, Any]:
    """Task-level estimates from ``validate-job --gt-job`` reports of the task's jobs on the GT job
    ``review sample`` created; a report of another reference, or frames outside the sample, are errors."""
    from ropewatch_validator.ops.loop_store import stored_sample

    if not reports:
        raise InputError("review estimate needs the reports of the task's jobs (validate-job --gt-job)")
    host, task = _same_task(reports)
    gt, sampled = stored_sample(store, host, task)
    if gt is None:
        raise InputError(
            f"no sample of task {task} on {host} in this history store (run review sample first)"
        )
    for r in reports:
        if r.source.reference_mode != "gt-job" or r.source.reference_job != gt:
            raise InputError(
                f"report of job {r.source.job} is not validated against GT job {gt} "
                f"(validate-job --gt-job {gt})"
            )
    settings = reports[0].settings
    counts = (
        pd.concat([frame_counts(objects_frame(r), settings.attribute, settings.values) for r in reports])
        .groupby(level=0)
        .sum()
    )
    where = {s.frame: s.stratum for s in sampled}
    outside = sorted(set(counts.index) - set(where))
    if outside:
        raise InputError(f"frames {outside[:5]} of the reports are not in the stored sample of task {task}")
    sizes = {s.stratum: s.stratum_frames for s in sampled}
    result = task_estimates(counts, where, sizes, settings.values)
    drawn = {s.stratum: s.stratum_drawn for s in sampled}
    result["strata"] = {
        h: {"frames": sizes[h], "drawn": drawn[h], "inclusion_prob": drawn[h] / sizes[h]} for h in sizes
    }
    result |= {"host": host, "task": task, "gt_job": gt}
    return result
