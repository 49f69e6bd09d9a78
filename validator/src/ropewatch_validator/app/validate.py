"""`validate-job` as a use case: pull a job and its reference, compare, trace, report, store, alert.

:func:`run_validation` is what the CLI calls, once, with a :class:`ValidateRequest` it built from its
arguments; :func:`validate_job` is one job (fetch → :func:`compare` → trace → thumbnails) and
:func:`compare` the pure part of it. Progress and the per-job terminal summary go through an
:class:`Observer`, so nothing here prints. Errors are ``RopewatchError`` subclasses (``cli/main``
maps them); a job's own failure is an outcome of the batch (``ops.schedule``), not an exception.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from ropewatch_core.errors import InputError
from ropewatch_validator.cvat.client import ConnectionSettings, FetchError
from ropewatch_validator.evaluation.match import Settings
from ropewatch_validator.ops.schedule import BatchResult, JobRef
from ropewatch_validator.render.report import FORMATS
from ropewatch_validator.trace.section import TraceOptions

if TYPE_CHECKING:
    from collections import Counter

    import pandas as pd

    from ropewatch_validator.cvat.client import Connection
    from ropewatch_validator.cvat.fetch import JobData
    from ropewatch_validator.evaluation.baseline_stats import Comparisons
    from ropewatch_validator.ops.history import HistoryStore
    from ropewatch_validator.render.model import Report
    from ropewatch_validator.render.thumbs import Thumbnail

ReferenceMode = Literal["manual", "gt-job", "reference-job"]


class BadReference(InputError):
    """The reference asked for cannot be a reference of this job (itself, or not its task's GT job)."""


@dataclass(frozen=True)
class JobSelection:
    """Which jobs: ids, and/or every annotation job of a task or a project."""

    job_ids: tuple[int, ...] = ()
    task: int | None = None
    project: int | None = None


@dataclass(frozen=True)
class ValidateOptions:
    """How each job is validated and where its reports go (every field is a ``validate-job`` option).

    ``gt_job`` is a job id or ``"auto"`` (the task's Ground Truth job); ``reference_job`` another job
    whose boxes are all reference; neither: the job's own manual boxes are the reference.
    """

    settings: Settings = field(default_factory=Settings)
    gt_job: int | Literal["auto"] | None = None
    reference_job: int | None = None
    model_version: str | None = None
    out: Path = Path("ropewatch-reports")
    formats: tuple[str, ...] = FORMATS
    frame_cache: Path | None = None
    frame_workers: int = 8
    thumbnails: bool = True
    trace: TraceOptions | None = None
    job_deadline_s: float = 1800.0
    since: str | None = None
    force: bool = False


@dataclass(frozen=True)
class ValidateRequest:
    """One ``validate-job`` run: where CVAT is, which jobs, how, and the history store and rules."""

    connection: ConnectionSettings
    jobs: JobSelection
    options: ValidateOptions
    db: str | None = None
    rules: Path | None = None


@dataclass(frozen=True)
class Reference:
    """A job's reference as fetched: ``job`` is None in ``manual`` mode (the job's own boxes);
    ``honeypots`` maps a honeypot frame to the validation frame it shows (GT pool tasks)."""

    mode: ReferenceMode = "manual"
    job_id: int | None = None
    job: JobData | None = None
    honeypots: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class JobResult:
    """One validated job: its report and what its report.html draws besides (thumbnails, and the
    comparisons with the reference version and the version's own earlier runs)."""

    report: Report
    thumbnails: Mapping[int, Thumbnail] | None = None
    comparisons: Comparisons | None = None


class Observer(Protocol):
    """What a run shows while it works (a terminal progress bar, or nothing)."""

    def listed(self, jobs: int) -> None: ...

    def scanning(self, jobs: int) -> Callable[[int], None]:
        """Listed jobs whose frame meta is about to be read; returns the callback that advances by n."""
        ...

    def phase(self, job_id: int, what: str) -> None: ...

    def frames(self, job_id: int, total: int) -> Callable[[int], None]:
        """Frames about to be fingerprinted; returns the callback that advances by n."""
        ...

    def frames_done(self, job_id: int) -> None: ...

    def validated(self, result: JobResult) -> None: ...


class Silent:
    """An :class:`Observer` that shows nothing."""

    def listed(self, jobs: int) -> None:
        pass

    def scanning(self, jobs: int) -> Callable[[int], None]:
        return lambda n: None

    def phase(self, job_id: int, what: str) -> None:
        pass

    def frames(self, job_id: int, total: int) -> Callable[[int], None]:
        return lambda n: None

    def frames_done(self, job_id: int) -> None:
        pass

    def validated(self, result: JobResult) -> None:
        pass


def fetch_reference(
    conn: Connection, job_id: int, gt_job: int | Literal["auto"] | None, reference_job: int | None
) -> tuple[JobData, Reference]:
    """The job and its reference from CVAT; a :class:`BadReference` when it cannot be one."""
    from ropewatch_validator.cvat.fetch import fetch_honeypots, fetch_job, find_jobs, get_json

    if reference_job is not None and reference_job == job_id:
        raise BadReference(f"--reference-job {reference_job} is the job itself")
    job = fetch_job(conn, job_id)
    if gt_job is None and reference_job is None:
        return job, Reference()
    honeypots: dict[int, int] = {}
    mode: ReferenceMode
    if reference_job is not None:
        mode, other = "reference-job", reference_job
    else:
        mode = "gt-job"
        if gt_job == "auto":
            found = find_jobs(conn, task_id=job.task_id, job_type="ground_truth")
            if not found:
                raise FetchError(f"task {job.task_id} on {conn.host} has no Ground Truth job")
            other = int(found[0]["id"])
        else:
            other = int(str(gt_job))
        task = get_json(conn, f"task {job.task_id}", conn.api_client.tasks_api.retrieve, job.task_id)
        if task.get("validation_mode") == "gt_pool":  # honeypots show validation frames (CVAT >= 2.22)
            honeypots = fetch_honeypots(conn, job_id)
    if other == job_id:
        raise BadReference(f"--{mode} {other} is the job itself")
    ref_job = fetch_job(conn, other)
    if mode == "gt-job" and (ref_job.job_type != "ground_truth" or ref_job.task_id != job.task_id):
        raise BadReference(
            f"--gt-job {other} is not a Ground Truth job of task {job.task_id} "
            f"(it is a {ref_job.job_type} job of task {ref_job.task_id})"
        )
    return job, Reference(mode, other, ref_job, honeypots)


def compare(
    job: JobData, reference: Reference, settings: Settings, *, model_version: str | None = None
) -> Report:
    """The report of ``job`` against ``reference`` (pure: nothing fetched, nothing changed in place)."""
    from ropewatch_validator.evaluation.drops import unknown_sources, value_drops
    from ropewatch_validator.evaluation.match import match
    from ropewatch_validator.render import report as rpt
    from ropewatch_validator.render.model import Source

    frames, pred, ref, skipped, dropped = _sides(job, reference, settings)
    sizes = {
        int(f): (int(w), int(h)) for f, w, h in frames[["frame", "width", "height"]].itertuples(index=False)
    }
    pred, ref = match(pred, ref, settings.iou, rule=settings.matching, sizes=sizes)
    source = Source(
        host=job.host,
        job=job.job_id,
        task=job.task_id,
        project=job.project_id,
        job_updated_date=job.job_updated_date,
        job_state=job.deleted_digest,
        reference_mode=reference.mode,
        reference_job=reference.job_id,
        server_has_score=job.has_score,
    )
    return rpt.build(
        source=source,
        settings=settings,
        frames=frames,
        pred=pred,
        ref=ref,
        skipped=skipped,
        dropped=dropped
        + unknown_sources(job.shapes, settings)
        + value_drops(pred, settings, "prediction")
        + value_drops(ref, settings, "reference"),
        model_version=model_version,
    )


def _sides(
    job: JobData, reference: Reference, settings: Settings
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, Counter, Counter]:
    """The frames compared, the predictions and the reference on them, and what was skipped and dropped."""
    from ropewatch_validator.evaluation.match import onto_job_frames, other_labels, pair_frames, select

    ref_job = reference.job
    if ref_job is None:
        pred = select(job.shapes, settings, settings.pred_sources)
        ref = select(job.shapes, settings, settings.ref_sources)
        return job.frames, pred, ref, job.skipped + other_labels(job.shapes, settings), job.dropped
    frames = job.frames
    if reference.honeypots:
        frames = frames.assign(real_frame=[reference.honeypots.get(int(f), int(f)) for f in frames["frame"]])
    pairs = pair_frames(frames, ref_job.frames, by_real_frame=reference.mode == "gt-job")
    frames = frames[frames["frame"].isin(pairs["frame"])].reset_index(drop=True)
    live = pairs["frame"].to_numpy()
    pred = select(job.shapes, settings, settings.pred_sources, live)
    ref = onto_job_frames(select(ref_job.shapes, settings, tuple(ref_job.shapes["source"].unique())), pairs)
    skipped = (
        job.skipped
        + ref_job.skipped
        + other_labels(job.shapes, settings, live)
        + other_labels(ref_job.shapes, settings, pairs["ref_frame"].to_numpy())
    )
    return frames, pred, ref, skipped, job.dropped + ref_job.dropped


def validate_job(
    conn: Connection,
    job_id: int,
    options: ValidateOptions,
    store: HistoryStore,
    observer: Observer | None = None,
    baseline_runs: int = 5,
) -> JobResult:
    """One job, within ``options.job_deadline_s``: its report, traced with ``options.trace``, and what
    report.html needs from CVAT and the store (thumbnails of the worst frames, the comparisons; the
    own baseline is the median of the version's first ``baseline_runs`` earlier runs)."""
    from ropewatch_validator.cvat.frames import job_frame_fetcher
    from ropewatch_validator.ops.baselines import for_report
    from ropewatch_validator.render.html import kpi_metrics
    from ropewatch_validator.render.thumbs import with_crops, worst_frame_thumbnails
    from ropewatch_validator.trace.section import trace_job

    observer = observer or Silent()
    observer.phase(job_id, "pulling and matching")
    with conn.job_deadline(options.job_deadline_s):
        job, reference = fetch_reference(conn, job_id, options.gt_job, options.reference_job)
        report = compare(job, reference, options.settings, model_version=options.model_version)
        if options.trace is not None:
            advance = observer.frames(job_id, int((~job.frames["deleted"]).sum()))
            trace = trace_job(
                job,
                conn,
                options.trace,
                options.settings,
                cache_dir=options.frame_cache,
                workers=options.frame_workers,
                progress=advance,
            )
            observer.frames_done(job_id)
            # only the mistakes' frames are downloaded a second time (through the frame cache)
            fetch = job_frame_fetcher(conn, job, options.frame_cache)
            trace = trace.model_copy(
                update={"mistakes": with_crops(trace.mistakes, fetch, options.frame_workers)}
            )
            versions = trace.model_versions
            version = report.model_version or (versions[0] if len(versions) == 1 else None)
            report = report.with_trace(trace, version)
        thumbnails, comparisons = None, None
        if "html" in options.formats:
            comparisons = for_report(store, report, kpi_metrics(report), baseline_runs)
            if options.thumbnails:
                sizes = {
                    int(f): (int(w), int(h))
                    for f, w, h in job.frames[["frame", "width", "height"]].to_numpy()
                }
                thumbnails = worst_frame_thumbnails(
                    report.worst_frames,
                    job_frame_fetcher(conn, job, options.frame_cache),
                    sizes,
                    options.frame_workers,
                )
    result = JobResult(report, thumbnails, comparisons)
    observer.validated(result)
    return result


def list_jobs(
    conn: Connection,
    jobs: JobSelection,
    deadline_s: float,
    *,
    workers: int = 8,
    scanning: Callable[[int], Callable[[int], None]] | None = None,
) -> list[JobRef]:
    """The jobs to validate; listed ones carry their ``updated_date`` and deleted-frames digest, so an
    unchanged job is skipped before its annotations are read. The digests need one ``data/meta``
    request per listed job: at most ``workers`` in flight (a project of 500 jobs is seconds, not
    minutes), in the listed order; ``scanning(n)`` gives the callback advanced by one per answer."""
    from concurrent.futures import ThreadPoolExecutor

    from ropewatch_validator.cvat.fetch import fetch_deleted_digest, find_jobs

    refs = [JobRef(j, None, conn.host) for j in jobs.job_ids]  # locks are per (host, job)
    with conn.job_deadline(deadline_s):
        listed = [
            job
            for scope in (
                {"task_id": jobs.task} if jobs.task else None,
                {"project_id": jobs.project} if jobs.project else None,
            )
            if scope
            for job in find_jobs(conn, job_type="annotation", **scope)
        ]
        advance = scanning(len(listed)) if scanning is not None and listed else None

        def digest(job: Mapping[str, Any]) -> JobRef:
            ref = JobRef(job["id"], job.get("updated_date"), conn.host, fetch_deleted_digest(conn, job["id"]))
            if advance is not None:
                advance(1)
            return ref

        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            refs += list(pool.map(digest, listed))
    return refs


def run_validation(request: ValidateRequest, observer: Observer | None = None) -> BatchResult:
    """Connect, list the jobs, open the store and the rules, then validate every job in one batch
    (per-job locks and isolation, one exit code: ``ops.schedule.run_batch``)."""
    from ropewatch_validator.cvat.client import connect
    from ropewatch_validator.ops.alerts.rules import AlertConfig, load_config
    from ropewatch_validator.ops.history import open_store
    from ropewatch_validator.ops.schedule import run_batch
    from ropewatch_validator.render import report as rpt

    options = request.options
    conn = connect(request.connection)
    refs = list_jobs(
        conn,
        request.jobs,
        options.job_deadline_s,
        workers=options.frame_workers,
        scanning=observer.scanning if observer is not None else None,
    )
    if not refs:
        raise InputError("no jobs given (JOB_ID, --task or --project)")
    if observer is not None:
        observer.listed(len(refs))
    store = open_store(request.db)
    rules = load_config(request.rules) if request.rules else AlertConfig()
    extras: dict[int, JobResult] = {}  # job -> its result, until stage() writes its report folder

    def one(job_id: int) -> Report:
        result = validate_job(conn, job_id, options, store, observer, rules.baseline_runs)
        extras[job_id] = result
        return result.report

    def stage(report: Report) -> rpt.StagedReports:
        result = extras.pop(report.source.job, JobResult(report))
        return rpt.stage(
            report,
            options.out / f"job-{report.source.job}",
            options.formats,
            thumbnails=dict(result.thumbnails) if result.thumbnails is not None else None,
            comparisons=result.comparisons,
        )

    return run_batch(
        refs,
        one,
        store,
        rules,
        since=options.since,
        force=options.force,
        lock_wait_s=options.job_deadline_s,
        stage=stage,
    )
