"""report.html in a real browser (Debian's chromium through Playwright): what a person sees on the page
of a job validated end to end (sandbox CVAT, cvat-sdk, validate-job) agrees with report.json."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest

from ropewatch_validator.cli.main import main
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic
from support.browser import chromium, watch


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Two jobs of one model version, validated in turn: job 102's page has job 101 as its baseline."""
    tmp = tmp_path_factory.mktemp("report")
    state = sandbox.CvatState()
    state.add(synthetic.generate(30, seed=3))
    state.add(synthetic.generate(30, job_id=102, seed=8, p_flip=0.25))
    with sandbox.serve(state) as (url, st):
        for job in ("101", "102"):
            argv = ["validate-job", job, "--server-host", url, "--out", str(tmp / "out"), "--quiet"]
            argv += [
                "--db",
                str(tmp / "h.sqlite"),
                "--frame-cache",
                str(tmp / "cache"),
                "--model-version",
                "v1",
            ]
            assert main(argv) == 0
        frame_requests = [p for p in st.requests if "/data?" in p]
    out = tmp / "out"
    return url, out, frame_requests


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def _open(browser, path):
    seen = watch(browser)
    seen.page.goto(path.as_uri())
    return seen


def test_kpis_tables_and_baseline_match_report_json(reports, browser):
    url, out, _ = reports
    first = json.loads((out / "job-101" / "report.json").read_text())
    rep = json.loads((out / "job-102" / "report.json").read_text())
    seen = _open(browser, out / "job-102" / "report.html")
    page = seen.page

    def card(key):
        return page.locator(f'[data-kpi="{key}"] .value').inner_text()

    pc, det = rep["attribute"]["per_class"], rep["detection"]
    assert (
        card("f1_wrong") == f"{pc['wrong']['f1']:.3f}" and card("f1_correct") == f"{pc['correct']['f1']:.3f}"
    )
    flips = rep["errors"]["flip_wrong_to_correct"] / rep["counts"]["references"] * 1000  # per 1,000 persons
    assert card("flips_per_1000") == f"{flips:.1f}"
    assert card("det_precision") == f"{det['precision']:.3f}" and card("det_recall") == f"{det['recall']:.3f}"
    assert card("frames_evaluated") == str(rep["counts"]["frames_evaluated"]) == "30"
    # the own baseline of v1 when job 102 was written = the median of its earlier runs = job 101's values
    base = first["attribute"]["per_class"]["wrong"]["f1"]
    shown = page.locator('[data-kpi="f1_wrong"] [data-compare="own"]').inner_text()
    assert shown.startswith(
        f"{pc['wrong']['f1'] - base:+.3f} vs own earlier runs of v1 (median of its first 1 earlier run;"
    )
    assert shown.endswith(f": {base:.3f}")
    # one version only: nothing to compare it with, and the page says so
    assert page.locator('[data-kpi="f1_wrong"] [data-compare="reference"]').inner_text() == (
        "no reference version yet (the first version stored)"
    )

    # tables are tables: the confusion matrix and the error counts read back as numbers
    cm = rep["attribute"]["confusion_matrix"]
    cells = page.locator("#confusion tr").nth(1).locator("td").all_inner_texts()
    assert cells[:2] == [str(cm[0][0]), str(cm[0][1])]
    for k, n in rep["errors"].items():
        assert page.locator(f'#errors tr[data-error="{k}"] td').nth(1).inner_text() == str(n)
    assert page.locator("#by-size tr").count() == 1 + len(rep["breakdowns"]["size"])
    assert seen.problems() == []


def test_worst_frames_show_boxes_and_link_into_cvat(reports, browser):
    url, out, frame_requests = reports
    rep = json.loads((out / "job-101" / "report.json").read_text())
    seen = _open(browser, out / "job-101" / "report.html")
    page = seen.page
    assert page.locator("#cvat-job").get_attribute("href") == f"{url}/tasks/11/jobs/101"
    figures = page.locator("#worst-frames figure")
    assert figures.count() == len(rep["worst_frames"]) == 10
    for i, w in enumerate(rep["worst_frames"]):
        fig = figures.nth(i)
        assert fig.get_attribute("data-frame") == str(w["frame"])
        assert fig.locator("svg image").count() == 1  # the frame itself, inlined
        boxes = fig.locator("a.box")
        assert boxes.count() == len(w["objects"])
        assert boxes.locator("rect.ref").count() == sum(o["role"] == "reference" for o in w["objects"])
        assert sorted(boxes.locator("text").all_text_contents()) == sorted(o["error"] for o in w["objects"])
        link = urlsplit(fig.locator("a.frame-link").get_attribute("href"))
        assert (link.path, parse_qs(link.query)) == ("/tasks/11/jobs/101", {"frame": [str(w["frame"])]})
        for k, o in enumerate(w["objects"]):
            if o["shape_id"] is not None:  # the object itself: CVAT's annotation page filters to it
                q = parse_qs(urlsplit(boxes.nth(k).get_attribute("href")).query)
                assert q == {"frame": [str(w["frame"])], "type": ["shape"], "serverID": [str(o["shape_id"])]}
    # thumbnails came through the frame cache: each worst frame downloaded once over both runs' frames
    assert len(frame_requests) == len(set(frame_requests))
    assert seen.problems() == []


def test_object_table_filters_by_error_and_class(reports, browser):
    _, out, _ = reports
    rep = json.loads((out / "job-101" / "report.json").read_text())
    cols = rep["objects"]["columns"]
    rows = [dict(zip(cols, r)) for r in rep["objects"]["rows"]]
    seen = _open(browser, out / "job-101" / "report.html")
    page = seen.page
    visible = page.locator("#objects tbody tr:visible")
    assert visible.count() == len(rows)
    page.select_option("#filter-error", "missed")
    assert visible.count() == sum(r["error"] == "missed" for r in rows)
    page.select_option("#filter-class", "wrong")
    expected = [r for r in rows if r["error"] == "missed" and r["safety_rope_use"] == "wrong"]
    assert visible.count() == len(expected) > 0
    assert page.locator("#object-count").inner_text() == str(len(expected))
    first = visible.first.locator("a")
    href, ref = first.get_attribute("href"), expected[0]
    if ref["track_id"] is not None:  # (report.json's object rows may spell ids as floats: 1.0)
        assert href.endswith(f"frame={ref['frame']:.0f}&type=track&serverID={ref['track_id']:.0f}")
    else:
        assert href.endswith(f"frame={ref['frame']:.0f}&type=shape&serverID={ref['shape_id']:.0f}")
    assert seen.problems() == []


def test_no_thumbnails_draws_the_boxes_without_frames(tmp_path, browser):
    state = sandbox.CvatState()
    state.add(synthetic.generate(20, seed=5))
    with sandbox.serve(state) as (url, st):
        argv = ["validate-job", "101", "--server-host", url, "--out", str(tmp_path), "--quiet"]
        assert main([*argv, "--db", str(tmp_path / "h.sqlite"), "--no-thumbnails"]) == 0
        assert [p for p in st.requests if "/data?" in p] == []  # no frame downloaded
    rep = json.loads((tmp_path / "job-101" / "report.json").read_text())
    seen = _open(browser, tmp_path / "job-101" / "report.html")
    assert seen.page.locator("#worst-frames svg image").count() == 0
    assert seen.page.locator("#worst-frames a.box").count() == sum(
        len(w["objects"]) for w in rep["worst_frames"]
    )
    own = seen.page.locator('[data-kpi="f1_wrong"] [data-compare="own"]')
    assert own.inner_text() == "no earlier runs of this version yet (drift)"
    assert seen.problems() == []
