"""backtest.json as a typed model (pydantic v2): `ropewatch backtest` writes it, `card` and `gate` read it.

Every version is scored on the same reference persons, so the versions compare paired: ``pairs[]``
holds McNemar's exact test and the frame-clustered bootstrap CI of each difference (candidate ``b`` −
baseline ``a``), ``persons[]`` the scores themselves (the card draws samples and the FP audit from
them, and a re-run can be diffed). ``backtest.schema.json`` beside this module is generated from the
model (``python -m ropewatch_validator.render.backtest_model``; a test keeps it equal).

:func:`assemble` computes metrics, CIs and pairs from the persons with :mod:`evaluation.compare`, so
the backtest and a card made from a scores CSV share one implementation. Metric paths are the alert
rules' style (``per_class.wrong.f1``, ``accuracy``, ``ap``, ``flips_per_1000``).
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ropewatch_core.errors import InputError
from ropewatch_validator.evaluation.compare import (
    LEVEL,
    N_BOOT,
    SEED,
    VALUES,
    BinaryMetrics,
    PairComparison,
    binary_metrics,
    clustered_bootstrap,
    compare_pair,
    metric_at,
)
from ropewatch_validator.render.model import ClassMetrics, Ratio

SCHEMA_VERSION = "1.0"
SCHEMA_PATH = Path(__file__).with_name("backtest.schema.json")
_UTC = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class Part(BaseModel):
    """A frozen block of backtest.json; unknown keys are an error, so the schema says what is there."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSource(Part):
    """What was scored: a CVAT scope (host and ids; never credentials), a dataset or a scores file."""

    kind: Literal["cvat", "dataset", "scores"]
    host: str | None = None
    jobs: list[int] = Field(default_factory=list)
    tasks: list[int] = Field(default_factory=list)
    projects: list[int] = Field(default_factory=list)
    path: str | None = None  # the dataset directory or the scores file

    @field_validator("host")
    @classmethod
    def _no_credentials(cls, host: str | None) -> str | None:
        if host is not None and "@" in host.split("://", 1)[-1].split("/", 1)[0]:
            raise ValueError("the host must not carry credentials (user:password@)")
        return host


class Data(Part):
    source: DataSource
    n_persons: int
    n_frames: int
    skipped: dict[str, int] = Field(default_factory=dict)  # reason -> persons left out


class Cascade(Part):
    """The fast filter before the expert: its checkpoint and band [lo, hi] (``ropewatch_core.cascade``)."""

    filter_sha256: str
    band: tuple[float, float]


class Timing(Part):
    ms_per_frame: float
    device: str
    torch_threads: int | None = None


class VersionMetrics(Part):
    """Shaped like report.json's attribute block (``per_class``, ``accuracy``, ``confusion``: rows =
    truth, columns = prediction, order ``values``) plus AP, thr, the counts of the positive class
    ``correct`` and the dangerous flips (truth ``wrong`` predicted ``correct``) per 1,000 persons."""

    values: list[str] = Field(default_factory=lambda: list(VALUES))
    per_class: dict[str, ClassMetrics]
    accuracy: Ratio
    confusion: list[list[int]]
    ap: Ratio
    thr: float
    tp: int
    fp: int
    fn: int
    tn: int
    flips_per_1000: Ratio

    @classmethod
    def of(cls, m: BinaryMetrics) -> VersionMetrics:
        per_class = {
            v: ClassMetrics(precision=c.precision, recall=c.recall, f1=c.f1, support=c.support)
            for v, c in m.per_class.items()
        }
        return cls(
            values=list(m.values),
            per_class=per_class,
            accuracy=m.accuracy,
            confusion=[list(r) for r in m.confusion],
            ap=m.ap,
            thr=m.thr,
            tp=m.tp,
            fp=m.fp,
            fn=m.fn,
            tn=m.tn,
            flips_per_1000=m.flips_per_1000,
        )

    def metric(self, path: str) -> float | None:
        """A number by metric path (:func:`evaluation.compare.metric_paths`); None where undefined."""
        return metric_at(self, self.values, path)


class Interval(Part):
    low: Ratio
    high: Ratio


class VersionSpec(Part):
    """What is known of a version before it is scored."""

    version: str = Field(min_length=1)
    sha256: str | None = None  # of the checkpoint file; None for a scores file
    path: str | None = None  # the checkpoint's file name only
    thr: float
    thr_source: Literal["checkpoint", "--thr", "validation split"]
    labels: list[str] | None = None  # the checkpoint's head labels
    head: str | None = None  # e.g. "Linear(256, 2)"
    cascade: Cascade | None = None
    timing: Timing | None = None
    config: dict[str, Any] | None = None  # the checkpoint's config block (training history etc.)

    @field_validator("sha256")
    @classmethod
    def _hex(cls, sha: str | None) -> str | None:
        if sha is not None and not _SHA256.match(sha):
            raise ValueError("sha256 must be 64 lowercase hex digits")
        return sha

    @field_validator("path")
    @classmethod
    def _file_name(cls, path: str | None) -> str | None:
        if path is not None and ("/" in path or "\\" in path):
            raise ValueError("path is the checkpoint's file name only, without folders")
        return path


class Version(VersionSpec):
    metrics: VersionMetrics
    ci: dict[str, Interval] = Field(default_factory=dict)  # metric path -> 95% clustered-bootstrap CI


class Discordant(Part):
    a_right_b_wrong: int
    a_wrong_b_right: int


class DiffCI(Part):
    estimate: Ratio
    low: Ratio
    high: Ratio


class Pair(Part):
    """Baseline ``a`` against candidate ``b`` on the same persons; ``diffs`` are b − a."""

    a: str
    b: str
    mcnemar_p: float
    n_discordant: Discordant
    diffs: dict[str, DiffCI]


class Detector(Part):
    arch: str
    weights: str
    recall: Ratio
    precision: Ratio
    ap: Ratio
    ms_per_frame: float | None
    n_reference: int
    n_detected: int


class Person(Part):
    """One scored reference person: frame (with job_id: the bootstrap's cluster), box, truth and
    P(correct) per version."""

    frame: int
    frame_name: str | None = None
    box: list[float] | None = Field(default=None, min_length=4, max_length=4)  # x1, y1, x2, y2
    truth: str
    p_correct: dict[str, float]
    job_id: int | None = None
    object_id: int | None = None
    image: str | None = None  # a local image file of the frame, where known (a scores CSV's `image`)

    @field_validator("p_correct")
    @classmethod
    def _finite(cls, p: dict[str, float]) -> dict[str, float]:
        odd = [k for k, v in p.items() if not math.isfinite(v)]
        if odd:
            raise ValueError(f"P(correct) is not a finite number for {odd}")
        return p


class BacktestResult(Part):
    """backtest.json."""

    schema_version: str = SCHEMA_VERSION
    created: str  # UTC, ropewatch_core.jsonio.utc_iso
    data: Data
    versions: list[Version] = Field(min_length=1)
    pairs: list[Pair] = Field(default_factory=list)
    detectors: list[Detector] = Field(default_factory=list)
    persons: list[Person] = Field(default_factory=list)
    n_boot: int = N_BOOT
    seed: int = SEED

    @field_validator("created")
    @classmethod
    def _utc(cls, created: str) -> str:
        if not _UTC.match(created):
            raise ValueError("created must be UTC ISO 8601 ending in Z (2026-12-04T10:00:00.000000Z)")
        return created

    @model_validator(mode="after")
    def _consistent(self) -> BacktestResult:
        names = [v.version for v in self.versions]
        if len(set(names)) != len(names):
            raise ValueError(f"version names repeat: {names}")
        for pair in self.pairs:
            if pair.a not in names or pair.b not in names:
                raise ValueError(f"pair {pair.a} vs {pair.b} names a version not in versions[] ({names})")
        missing = {n for person in self.persons for n in names if n not in person.p_correct}
        if missing:
            raise ValueError(f"persons without a score for version(s) {sorted(missing)}")
        return self

    def version(self, name: str) -> Version:
        for v in self.versions:
            if v.version == name:
                return v
        raise InputError(f"no version {name!r} in the backtest (it has {', '.join(self.names())})")

    def names(self) -> list[str]:
        return [v.version for v in self.versions]

    def pair(self, a: str, b: str) -> Pair | None:
        """The comparison of baseline ``a`` and candidate ``b``, if the backtest holds it."""
        return next((p for p in self.pairs if p.a == a and p.b == b), None)

    def to_json(self) -> str:
        return self.model_dump_json(indent=1)

    @classmethod
    def load(cls, path: str | Path) -> BacktestResult:
        """Read backtest.json; a file that cannot be read or is not a backtest result is one InputError
        line naming the file and its first problem."""
        path = Path(path)
        try:
            return cls.model_validate_json(path.read_bytes())
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
        except ValidationError as exc:
            e = exc.errors()[0]
            where = ".".join(str(x) for x in e["loc"]) or "the top level"
            more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
            raise InputError(f"{path}: {where}: {e['msg']}{more}") from None


def clusters(persons: list[Person]) -> np.ndarray:
    """The bootstrap's cluster of each person: its frame within its job (frame numbers of two jobs
    are different frames)."""
    if not persons:
        return np.zeros(0, dtype=np.int64)
    keys = np.array([(-1 if q.job_id is None else q.job_id, q.frame) for q in persons], dtype=np.int64)
    return np.unique(keys, axis=0, return_inverse=True)[1].reshape(-1)


def _pair(a: str, b: str, c: PairComparison) -> Pair:
    return Pair(
        a=a,
        b=b,
        mcnemar_p=c.mcnemar_p,
        n_discordant=Discordant(a_right_b_wrong=c.a_right_b_wrong, a_wrong_b_right=c.a_wrong_b_right),
        diffs={k: DiffCI(estimate=d.estimate, low=d.low, high=d.high) for k, d in c.diffs.items()},
    )


def paired(result: BacktestResult, a: str, b: str) -> Pair | None:
    """Baseline ``a`` against candidate ``b``: the backtest's pair (turned round when it was stored as
    b vs a), else computed from ``persons`` with the backtest's resamples; None without either."""
    va, vb = result.version(a), result.version(b)
    if (p := result.pair(a, b)) is not None:
        return p
    if (p := result.pair(b, a)) is not None:
        n = p.n_discordant
        return Pair(
            a=a,
            b=b,
            mcnemar_p=p.mcnemar_p,
            n_discordant=Discordant(a_right_b_wrong=n.a_wrong_b_right, a_wrong_b_right=n.a_right_b_wrong),
            diffs={k: _turned(d) for k, d in p.diffs.items()},
        )
    if not result.persons:
        return None
    truth = [q.truth for q in result.persons]
    frames = clusters(result.persons)
    pa, pb = (np.array([q.p_correct[v.version] for q in result.persons]) for v in (va, vb))
    return _pair(a, b, compare_pair(truth, frames, pa, va.thr, pb, vb.thr, result.n_boot, result.seed))


def _turned(d: DiffCI) -> DiffCI:
    """a − b from b − a: the estimate negated, the CI's ends negated and swapped."""
    neg = [None if x is None else -x for x in (d.estimate, d.high, d.low)]
    return DiffCI(estimate=neg[0], low=neg[1], high=neg[2])


def assemble(
    *,
    created: str,
    source: DataSource,
    specs: list[VersionSpec],
    persons: list[Person],
    skipped: dict[str, int] | None = None,
    detectors: list[Detector] | None = None,
    n_boot: int = N_BOOT,
    seed: int = SEED,
    level: float = LEVEL,
) -> BacktestResult:
    """The backtest result of ``specs`` on ``persons``: metrics and CIs per version, and one pair per
    two versions in the order given (the earlier is the baseline ``a``, the later the candidate ``b``)."""
    truth = [p.truth for p in persons]
    frames = clusters(persons)
    scores = {s.version: np.array([p.p_correct[s.version] for p in persons]) for s in specs}
    versions = []
    for s in specs:
        m = binary_metrics(truth, scores[s.version], s.thr)
        ci = clustered_bootstrap(truth, frames, scores[s.version], s.thr, n_boot, seed, level)
        versions.append(
            Version(
                **s.model_dump(),
                metrics=VersionMetrics.of(m),
                ci={k: Interval(low=c.low, high=c.high) for k, c in ci.items()},
            )
        )
    pairs = []
    for a, b in itertools.combinations(specs, 2):
        pa, pb = scores[a.version], scores[b.version]
        pairs.append(
            _pair(
                a.version, b.version, compare_pair(truth, frames, pa, a.thr, pb, b.thr, n_boot, seed, level)
            )
        )
    return BacktestResult(
        created=created,
        data=Data(
            source=source, n_persons=len(persons), n_frames=len(set(frames.tolist())), skipped=skipped or {}
        ),
        versions=versions,
        pairs=pairs,
        detectors=detectors or [],
        persons=persons,
        n_boot=n_boot,
        seed=seed,
    )


def json_schema() -> str:
    """The JSON Schema of backtest.json, as committed in ``backtest.schema.json``."""
    from ropewatch_validator.render.model import schema_text

    return schema_text(BacktestResult, "backtest", SCHEMA_VERSION)


if __name__ == "__main__":  # regenerate the committed schema
    SCHEMA_PATH.write_text(json_schema(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
