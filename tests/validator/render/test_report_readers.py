"""What a reader of report.md, report.html and the terminal summary sees (issue 18: item 15 and
"readers cannot reconcile counts"): text from CVAT is shown literally, never as markup; FN and FP are
shown as the sums of the error types, worked out here from the per-object rows of a job validated
end to end on the sandbox; unmatched objects show their best IoU; skipped shapes are counted by reason;
edited_by_person is explained; the per-stage and lifecycle blocks of --logs are drawn everywhere."""

from __future__ import annotations

import html as html_lib
import json
import re
from collections import Counter
from html.parser import HTMLParser

import numpy as np
import pytest
from markdown_it import MarkdownIt
from rich.console import Console

from ropewatch_validator.cli.main import main
from ropewatch_validator.render import report as render
from ropewatch_validator.render.model import Report
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic
from ropewatch_validator.trace.model import Stages
from support.reports import traced_report


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("readers")
    state = sandbox.CvatState()
    state.add(synthetic.generate(30, seed=3))
    with sandbox.serve(state) as (url, _):
        argv = ["validate-job", "101", "--server-host", url, "--out", str(tmp / "out"), "--quiet"]
        assert main([*argv, "--db", str(tmp / "h.sqlite")]) == 0
    folder = tmp / "out" / "job-101"
    return Report.load(folder / "report.json"), folder


def _terminal(report: Report) -> str:
    console = Console(record=True, width=200)
    render.print_summary(report, console)
    return console.export_text()


def _words(text: str) -> str:
    """Text as read, whatever the terminal wrapped."""
    return " ".join(text.split())


class Cells(HTMLParser):
    """The text of every table cell, by the id of its table."""

    def __init__(self):
        super().__init__()
        self.tables, self.ids, self.cell = {}, [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.ids.append(dict(attrs).get("id") or f"table {len(self.tables)}")
            self.tables.setdefault(self.ids[-1], [])
        elif tag == "tr" and self.ids:
            self.tables[self.ids[-1]].append([])
        elif tag in ("td", "th") and self.ids:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.ids.pop()
        elif tag in ("td", "th") and self.cell is not None and self.ids:
            self.tables[self.ids[-1]][-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def _html_tables(page: str) -> dict[str, list[list[str]]]:
    parser = Cells()
    parser.feed(page)
    return parser.tables


def test_fn_and_fp_add_up_in_every_reader(validated):
    report, folder = validated
    rows = [dict(zip(report.objects.columns, r)) for r in report.objects.rows]
    refs = Counter(r["error"] for r in rows if r["role"] == "reference")
    preds = Counter(r["error"] for r in rows if r["role"] == "prediction")
    det = report.detection
    assert refs["missed"] + refs["covered_by_localization"] == det.fn and refs["covered_by_localization"] > 0
    assert preds["background"] + preds["localization"] + preds["duplicate"] == det.fp
    fn_line = f"missed {refs['missed']} + covered_by_localization {refs['covered_by_localization']}"
    fp_line = (
        f"background {preds['background']} + localization {preds['localization']} + "
        f"duplicate {preds['duplicate']}"
    )
    md = (folder / "report.md").read_text()
    assert f"| FN | {det.fn} | {fn_line} |" in md and f"| FP | {det.fp} | {fp_line} |" in md
    table = _html_tables((folder / "report.html").read_text())["reconciliation"]
    assert ["FN", str(det.fn), fn_line] in table and ["FP", str(det.fp), fp_line] in table
    text = _terminal(report)
    assert re.search(rf"FN\s+│\s+{det.fn}\s+│\s+{re.escape(fn_line)}", text)
    assert re.search(rf"FP\s+│\s+{det.fp}\s+│\s+{re.escape(fp_line)}", text)
    for reader in (md, _words(text)):
        assert "covered_by_localization: a reference only a localization error reached" in reader
        assert "edited_by_person" in reader and "not a model error: semi-auto predictions" in reader


def test_unmatched_objects_show_their_best_iou_and_skipped_shapes_are_counted(validated):
    report, folder = validated
    page = (folder / "report.html").read_text()
    tables = _html_tables(page)
    header = tables["objects"][0]
    iou, best = header.index("IoU"), header.index("best IoU")
    rows = [dict(zip(report.objects.columns, r)) for r in report.objects.rows]
    localized = [r for r in rows if r["error"] == "localization"]
    assert localized and all(0 < r["best_iou"] < report.settings.iou for r in localized)
    shown = [c for c in tables["objects"][1:] if c[header.index("error")] == "localization"]
    assert len(shown) == len(localized)
    assert all(c[iou] == "–" for c in shown)  # unmatched: no IoU of a match, never 0.00
    assert sorted(c[best] for c in shown) == sorted(f"{r['best_iou']:.2f}" for r in localized)
    skipped = report.counts.skipped_shapes
    assert skipped and sum(skipped.values()) > 0
    expected = sorted(["skipped shape", k, str(n)] for k, n in skipped.items())
    assert sorted(tables["left-out"][1:]) == expected
    md = (folder / "report.md").read_text()
    text = _terminal(report)
    for reason, n in skipped.items():
        assert f"| skipped shape | {reason} | {n} |" in md
        assert re.search(rf"skipped shape\s+│\s+{re.escape(reason)}\s+│\s+{n}", text)


HOSTILE = {
    "wrong": "<b>wrong</b>",
    "correct": "correct|<img src=x onerror=alert(1)>",
    "person": "<script>alert('label')</script>`x`",
}


def _renamed(node):
    """``node`` with every CVAT name of HOSTILE replaced, in keys, values and flip names."""
    if isinstance(node, dict):
        return {_renamed(k): _renamed(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_renamed(x) for x in node]
    if isinstance(node, str):
        flip = re.fullmatch(r"flip_(.+)_to_(.+)", node)
        if flip:
            return f"flip_{HOSTILE.get(flip[1], flip[1])}_to_{HOSTILE.get(flip[2], flip[2])}"
        return HOSTILE.get(node, node)
    return node


def _hostile_report(validated) -> Report:
    report, _ = validated
    data = _renamed(json.loads(report.to_json()))
    data["model_version"] = "<i>rope</i> [click](https://example.org)"
    return Report.model_validate(data)


def test_report_md_shows_text_from_cvat_literally(validated):
    hostile = _hostile_report(validated)
    assert hostile.settings.label == HOSTILE["person"] and hostile.settings.values[0] == HOSTILE["wrong"]
    md = render.markdown(hostile)
    page = MarkdownIt("commonmark", {"html": True}).enable("table").render(md)  # as a viewer renders it
    assert not re.search(r"<(script|img|b|i|a)\b", page)  # no raw HTML, no link
    visible = html_lib.unescape(re.sub(r"<[^>]+>", "", page))
    for value in (*HOSTILE.values(), hostile.model_version):
        assert value in visible  # shown as text, whole
    parser = Cells()
    parser.feed(page)
    for rows in parser.tables.values():  # a "|" in a value splits no cell
        assert {len(r) for r in rows} == {len(rows[0])}


def test_terminal_shows_text_from_cvat_literally(validated):
    hostile = _hostile_report(validated)
    hostile.model_version = "[bold red]v1[/]"
    assert "model [bold red]v1[/]" in _terminal(hostile)


def test_stages_and_lifecycle_are_drawn_in_every_reader(tmp_path):
    z = np.array([-2.0, -1.0, 1.5, 3.0])
    report = traced_report(z, np.array([0, 0, 1, 1]))
    report.trace.lifecycle.counts.update({"accepted": 3, "attribute_corrected": 1, "deleted": 2})
    report.trace.stages = Stages.model_validate({
        "requests": 10,
        "requests_skipping_expert": 7,
        "frame_skip_share": 0.7,
        "persons_by_filter_share": 0.8,
        "stages": {
            "filter": {"n": 3, "kept": 3, "accuracy": 1.0},
            "expert": {"n": 1, "kept": 0, "accuracy": 0.0},
        },
        "shadow": {
            "n": 2, "agreement_with_filter": 0.5, "n_with_final": 2, "expert_accuracy": 1.0,
            "filter_accuracy": 0.5,
        },
        "p_filter_mean": 0.9,
    })  # fmt: skip
    md = render.markdown(report)
    text = _terminal(report)
    tables = _html_tables(render.html_page(report))
    assert ["filter", "3", "3", "1.000"] in tables["stages"] and ["expert", "1", "0", "0.000"] in tables[
        "stages"
    ]
    assert ["attribute_corrected", "1", "still auto, a person changed the attribute"] in tables["lifecycle"]
    assert (
        "| filter | 3 | 3 | 1.000 |" in md and "| deleted | 2 | predicted, then deleted by a person |" in md
    )
    assert re.search(r"expert\s+│\s+1\s+│\s+0\s+│\s+0\.000", text)
    assert re.search(r"accepted\s+│\s+3\s+│\s+still auto, attribute as the model predicted it", text)
    for reader in (md, _words(text)):
        assert "10 requests, 7 skipped the expert (frame skip share 0.700)" in reader
        assert "work saved 1.000" in reader
