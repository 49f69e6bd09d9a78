"""The team's model card, generated from a backtest result: card.html (report.html's style) and card.md.

The sections are those of the team's hand-written card: all versions side by side, then for the chosen
version its test metrics, per-class table, confusion matrix with totals, training history, sample
inferences (4 per class, box coloured by the truth), the audit of the most confident mistakes, the
inference time with its device, the paired comparisons (McNemar, differences with CIs) and the
checkpoint's config block.

Every figure says how sure it is (its 95% frame-clustered bootstrap CI) and what it is compared with
(the baseline version, paired on the same persons). A difference is coloured only when its CI excludes
0: green when that side is the metric's good direction, red when not (``evaluation.compare.verdict``),
so a worse number is never green.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ropewatch_core.decision import CORRECT, WRONG
from ropewatch_core.errors import InputError
from ropewatch_validator.evaluation.compare import BETTER, UNCLEAR, WORSE, good_direction, verdict
from ropewatch_validator.render.backtest_model import BacktestResult, Pair, Person, Version, paired
from ropewatch_validator.render.html import render
from ropewatch_validator.render.thumbs import Thumbnail, region

PRF = ("precision", "recall", "f1")
N_SAMPLES, N_AUDIT = 4, 8  # sample inferences per class; most confident mistakes
TRUTH_COLOUR = {WRONG: "#c0392b", CORRECT: "#1e8449"}
# the side-by-side table and the chosen version's headline figures: (metric path, what it is)
HEADLINE = (
    ("ap", "AP (positive class correct)"),
    (f"per_class.{CORRECT}.f1", "F1 (correct, the positive class)"),
    (f"per_class.{CORRECT}.precision", "P (correct)"),
    (f"per_class.{CORRECT}.recall", "R (correct)"),
    ("accuracy", "accuracy"),
    (f"per_class.{WRONG}.f1", "F1 wrong"),
    ("flips_per_1000", "wrong→correct flips per 1,000 persons"),
)
SIDE_BY_SIDE = ("ap", f"per_class.{CORRECT}.f1", "accuracy", f"per_class.{WRONG}.f1", "flips_per_1000")


def fmt(path: str, value: float | None) -> str:
    """A metric as the card prints it: flips per 1,000 with 1 decimal, counts whole, ratios with 4."""
    if value is None:
        return "–"
    if path.endswith(("support", ".tp", ".fp", ".fn", ".tn")) or path in ("tp", "fp", "fn", "tn"):
        return f"{int(value):,}"
    return f"{value:.1f}" if path.startswith("flips") else f"{value:.4f}"


def fmt_ci(path: str, low: float | None, high: float | None) -> str:
    return "" if low is None or high is None else f"[{fmt(path, low)}, {fmt(path, high)}]"


def signed(path: str, value: float | None) -> str:
    text = fmt(path, value)
    return text if value is None or value < 0 else f"+{text}"


def better_word(path: str) -> str:
    good = good_direction(path)
    return "" if good is None else "higher is better" if good > 0 else "lower is better"


@dataclass(frozen=True)
class Figure:
    """A metric of one version: its value and CI, and its difference from the baseline with its CI."""

    path: str
    title: str
    value: str
    ci: str
    delta: str = ""
    delta_ci: str = ""
    verdict: str = ""  # evaluation.compare.verdict; "" without a baseline

    @property
    def css(self) -> str:
        return {BETTER: "better", WORSE: "worse", UNCLEAR: "note"}.get(self.verdict, "")

    @property
    def direction(self) -> str:
        return better_word(self.path)


def figure(v: Version, path: str, title: str, pair: Pair | None) -> Figure:
    """``v``'s figure ``path``, and its difference from the baseline of ``pair`` (b = ``v``) if any."""
    value = v.metrics.metric(path)
    ci = v.ci.get(path)
    f = Figure(path, title, fmt(path, value), fmt_ci(path, ci.low, ci.high) if ci else "")
    d = pair.diffs.get(path) if pair else None
    if d is None:
        return f
    return Figure(
        path,
        title,
        f.value,
        f.ci,
        signed(path, d.estimate),
        fmt_ci(path, d.low, d.high),
        verdict(path, d.low, d.high),
    )


@dataclass(frozen=True)
class Sample:
    """One person drawn on the card: the crop (when its frame could be read) and its caption."""

    person: Person
    caption: str
    thumb: Thumbnail | None
    region: list[float]
    colour: str
    scale: float


def _sample(person: Person, caption: str, thumb: Thumbnail | None) -> Sample:
    box = person.box or [0.0, 0.0, 1.0, 1.0]
    reg = thumb.region if thumb else region([box])
    scale = max((reg[2] - reg[0]) / 340.0, (reg[3] - reg[1]) / 240.0)
    return Sample(person, caption, thumb, reg, TRUTH_COLOUR.get(person.truth, "#223"), scale)


def pick_samples(result: BacktestResult) -> list[int]:
    """Indices of :data:`N_SAMPLES` persons per truth class, drawn at random (the backtest's seed)."""
    rng = np.random.default_rng(result.seed)
    truth = np.array([p.truth for p in result.persons])
    out: list[int] = []
    for value in (WRONG, CORRECT):
        idx = np.flatnonzero(truth == value)
        out += sorted(rng.choice(idx, size=min(N_SAMPLES, idx.size), replace=False).tolist())
    return out


def pick_audit(result: BacktestResult, version: str) -> list[int]:
    """Indices of the :data:`N_AUDIT` mistakes the version was most confident of (confidence =
    P of the class it predicted), most confident first."""
    thr = result.version(version).thr
    p = np.array([q.p_correct[version] for q in result.persons])
    said_correct = p >= thr
    wrong = np.flatnonzero(said_correct != (np.array([q.truth for q in result.persons]) == CORRECT))
    conf = np.where(said_correct, p, 1 - p)[wrong]
    return wrong[np.argsort(-conf, kind="stable")][:N_AUDIT].tolist()


def pct(x: float) -> str:
    return f"{x:.1%}"


@dataclass(frozen=True)
class CardView:
    """Everything card.html and card.md print."""

    result: BacktestResult
    chosen: Version
    baseline: str | None
    headline: list[Figure]
    per_class: list[dict[str, Any]]
    confusion: dict[str, Any]
    versions: list[dict[str, Any]]
    pairs: list[dict[str, Any]]
    history: dict[str, Any] | None
    samples: list[Sample]
    audit: list[Sample]
    n_mistakes: int
    pictures: str  # why samples have no picture, "" when they have
    config: str | None
    notes: list[str] = field(default_factory=list)


def training_history(config: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The per-epoch table of a checkpoint config's ``history`` (a list of {column: value}), or None."""
    rows = (config or {}).get("history")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        return None
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return {"columns": columns, "rows": [[_cell(r.get(c)) for c in columns] for r in rows]}


def _cell(x: Any) -> str:
    if x is None:
        return "–"
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def card_view(
    result: BacktestResult,
    version: str | None = None,
    baseline: str | None = None,
    thumbnails: Mapping[int, Thumbnail] | None = None,
) -> CardView:
    """The card of ``version`` (default: the last) against ``baseline`` (default: the version before
    it in the backtest; none when it is the only one). ``thumbnails`` by person index."""
    names = result.names()
    chosen = result.version(version or names[-1])
    if baseline is None:
        i = names.index(chosen.version)
        baseline = names[i - 1] if i else (names[1] if len(names) > 1 else None)
    elif baseline == chosen.version:
        raise InputError(f"--baseline {baseline} is the version the card is about; name another one")
    else:
        result.version(baseline)  # a clear error when it is not in the backtest
    m, thumbs = chosen.metrics, thumbnails or {}
    against = paired(result, baseline, chosen.version) if baseline else None
    headline = [figure(chosen, path, title, against) for path, title in HEADLINE]
    per_class = [
        {
            "value": v,
            "figures": [figure(chosen, f"per_class.{v}.{k}", k, against) for k in PRF],
            "support": m.per_class[v].support,
        }
        for v in m.values
        if v in m.per_class
    ]
    cm = m.confusion
    confusion = {
        "values": m.values,
        "rows": cm,
        "row_totals": [sum(r) for r in cm],
        "column_totals": [sum(c) for c in zip(*cm)],
        "total": sum(map(sum, cm)),
    }
    versions = []
    for i, v in enumerate(result.versions):
        left = paired(result, names[i - 1], v.version) if i else None
        figures = [figure(v, path, title, left) for path, title in HEADLINE if path in SIDE_BY_SIDE]
        versions.append({"v": v, "figures": figures})
    pairs = [
        {
            "pair": pair,
            "figures": [
                Figure(
                    path,
                    path,
                    signed(path, d.estimate),
                    fmt_ci(path, d.low, d.high),
                    verdict=verdict(path, d.low, d.high),
                )
                for path, d in pair.diffs.items()
            ],
        }
        for pair in result.pairs
    ]
    thr, name = chosen.thr, chosen.version
    samples = []
    for i in pick_samples(result):
        q, p = result.persons[i], result.persons[i].p_correct[name]
        pred = CORRECT if p >= thr else WRONG
        caption = f"truth={q.truth} pred={pred} (P(correct)={pct(p)}, thr={pct(thr)})"
        samples.append(_sample(q, caption, thumbs.get(i)))
    audit = []
    for i in pick_audit(result, name):
        q, p = result.persons[i], result.persons[i].p_correct[name]
        pred = CORRECT if p >= thr else WRONG
        conf = p if pred == CORRECT else 1 - p
        caption = f"truth={q.truth} → pred={pred} (conf={pct(conf)}; P(correct)={pct(p)}, thr={pct(thr)})"
        audit.append(_sample(q, caption, thumbs.get(i)))
    shown = samples + audit
    pictures = ""
    if not result.persons:
        pictures = "the backtest holds no per-person scores (persons[] is empty)"
    elif not any(s.thumb and s.thumb.jpeg for s in shown):
        pictures = "no frame image was available (give --images DIR, or an image column in the scores CSV)"
    elif any(not (s.thumb and s.thumb.jpeg) for s in shown):
        pictures = "some frames could not be read; their rows are drawn without a picture"
    return CardView(
        result=result,
        chosen=chosen,
        baseline=baseline,
        headline=headline,
        per_class=per_class,
        confusion=confusion,
        versions=versions,
        pairs=pairs,
        history=training_history(chosen.config),
        samples=samples,
        audit=audit,
        n_mistakes=m.fp + m.fn,
        pictures=pictures,
        config=json.dumps(chosen.config, indent=2, ensure_ascii=False) if chosen.config else None,
        notes=notes(result),
    )


def notes(result: BacktestResult) -> list[str]:
    """What must not go unnoticed: persons left out, and clusters that are single persons."""
    out = []
    if result.data.skipped:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(result.data.skipped.items()))
        out.append(f"{sum(result.data.skipped.values())} persons left out of every metric: {reasons}")
    if result.data.n_frames == result.data.n_persons and result.data.n_persons > 1:
        out.append(
            "every person is its own frame: if several persons share a frame, the CIs are too narrow "
            "(give the scores CSV a frame column)"
        )
    return out


def html_page(view: CardView) -> str:
    return render("card.html", c=view, colours=TRUTH_COLOUR, nav=False)


def _md_fig(f: Figure) -> str:
    ci = f" {f.ci}" if f.ci else ""
    delta = f" (Δ {f.delta} {f.delta_ci}: {f.verdict})" if f.verdict else ""
    return f"{f.value}{ci}{delta}"


def markdown(view: CardView) -> str:
    """card.md: the same sections as card.html, pictures as table rows."""
    r, v, m = view.result, view.chosen, view.chosen.metrics
    src = r.data.source
    where = src.host or src.path or src.kind
    lines = [
        f"# Model card: {v.version}",
        "",
        f"{r.data.n_persons:,} persons in {r.data.n_frames:,} frames of {where} · created {r.created} · "
        f"95% CIs: {r.n_boot:,} bootstrap resamples of frames (seed {r.seed})",
        "",
    ]
    lines += [f"> {n}" for n in view.notes] + ([""] if view.notes else [])
    lines += ["## Versions side by side (the same persons)", ""]
    lines += ["| | " + " | ".join(x["v"].version for x in view.versions) + " |"]
    lines += ["|---|" + "---|" * len(view.versions)]
    for j, (path, title) in enumerate((p, t) for p, t in HEADLINE if p in SIDE_BY_SIDE):
        cells = [_md_fig(x["figures"][j]) for x in view.versions]
        lines.append(f"| {title} ({better_word(path)}) | " + " | ".join(cells) + " |")
    rows = [
        ("thr", lambda x: f"{x.thr:.4f} ({x.thr_source})"),
        ("head", lambda x: x.head or "–"),
        ("labels", lambda x: json.dumps(x.labels) if x.labels else "–"),
        ("checkpoint", lambda x: f"{x.path or '–'} {x.sha256[:12] if x.sha256 else ''}".strip()),
    ]
    for title, get in rows:
        lines.append(f"| {title} | " + " | ".join(get(x["v"]) for x in view.versions) + " |")
    lines += [
        "",
        "Δ is against the version to the left, paired on the same persons, with its 95% CI.",
        "",
        f"## {v.version}: test metrics",
        "",
        f"Compared with: {view.baseline or 'no other version in this backtest'}.",
        "",
        "| AP | F1 | P | R | accuracy | thr | TP/FP/FN/TN |",
        "|---|---|---|---|---|---|---|",
        "| "
        + " | ".join(f.value for f in view.headline[:5])
        + f" | {v.thr:.4f} | {m.tp}/{m.fp}/{m.fn}/{m.tn} |",
        "",
        "| figure | value | 95% CI | Δ vs baseline | Δ 95% CI | verdict |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {f.title} ({f.direction}) | {f.value} | {f.ci} | {f.delta} | {f.delta_ci} | {f.verdict} |"
        for f in view.headline
    ]
    lines += ["", "## Per-class metrics", "", "| class | P | R | F1 | support |", "|---|---|---|---|---|"]
    for row in view.per_class:
        lines.append(
            f"| {row['value']} | " + " | ".join(_md_fig(f) for f in row["figures"]) + f" | {row['support']} |"
        )
    c = view.confusion
    lines += ["", "## Confusion matrix (rows = truth, columns = prediction)", ""]
    lines += ["| | " + " | ".join(c["values"]) + " | row total |", "|---|" + "---|" * (len(c["values"]) + 1)]
    for value, row, total in zip(c["values"], c["rows"], c["row_totals"]):
        lines.append(f"| {value} | " + " | ".join(str(n) for n in row) + f" | {total} |")
    lines.append("| col total | " + " | ".join(str(n) for n in c["column_totals"]) + f" | {c['total']} |")
    lines += ["", "## Training history", ""]
    if view.history:
        h = view.history
        lines += ["| " + " | ".join(h["columns"]) + " |", "|" + "---|" * len(h["columns"])]
        lines += ["| " + " | ".join(row) + " |" for row in h["rows"]]
    else:
        lines.append("The checkpoint's config carries no training history (no `history` list).")
    for title, rows_ in (
        (f"Sample inferences ({N_SAMPLES} per class, drawn at random)", view.samples),
        (f"FP audit: the {N_AUDIT} most confident mistakes (of {view.n_mistakes})", view.audit),
    ):
        lines += ["", f"## {title}", "", "| frame | box | inference |", "|---|---|---|"]
        lines += [
            f"| {s.person.frame_name or s.person.frame} | {_box(s.person)} | {s.caption} |" for s in rows_
        ]
    lines += ["", "## Inference time", "", "| version | ms per frame | device | torch threads |"]
    lines += ["|---|---|---|---|"]
    for x in r.versions:
        t = x.timing
        lines.append(
            f"| {x.version} | {t.ms_per_frame:.1f} | {t.device} | {t.torch_threads or '–'} |"
            if t
            else f"| {x.version} | not measured | | |"
        )
    lines += ["", "## Paired comparisons (b − a on the same persons)", ""]
    if not view.pairs:
        lines += ["Only one version: nothing to compare.", ""]
    for entry in view.pairs:
        p = entry["pair"]
        lines += [
            f"### {p.b} vs {p.a}",
            "",
            f"McNemar exact p = {p.mcnemar_p:.4g} ({p.n_discordant.a_right_b_wrong} persons only {p.a} got "
            f"right, {p.n_discordant.a_wrong_b_right} only {p.b} got right)",
            "",
            "| metric | Δ (b − a) | 95% CI | verdict |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {f.path} ({f.direction}) | {f.value} | {f.ci} | {f.verdict} |" for f in entry["figures"]
        ]
        lines.append("")
    if r.detectors:
        lines += ["## Person detectors", "", "| arch | weights | recall | precision | AP | ms per frame |"]
        lines += ["|---|---|---|---|---|---|"]
        lines += [
            f"| {d.arch} | {d.weights} | {_cell(d.recall)} | {_cell(d.precision)} | {_cell(d.ap)} | "
            f"{_cell(d.ms_per_frame)} |"
            for d in r.detectors
        ]
        lines.append("")
    lines += ["## Config", ""]
    lines += ["```json", view.config, "```"] if view.config else ["The checkpoint carries no config block."]
    return "\n".join(lines) + "\n"


def _box(p: Person) -> str:
    return "–" if p.box is None else "[" + ", ".join(f"{x:g}" for x in p.box) + "]"
