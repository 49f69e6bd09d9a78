"""`ropewatch serve` in a real browser, on the history the demo fills: eight jobs validated end to end
(sandbox CVAT, validate-job) as two model versions, the newer one tripping an alert whose webhooks
were delivered to one target and refused by the other. Expected figures are worked out here from the
jobs' report.json files."""

from __future__ import annotations

import hashlib
import json
import statistics
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from ropewatch_validator.cli.demo import DEMO_VERSIONS, run_validator_demo
from ropewatch_validator.cli.main import main
from ropewatch_validator.web.app import create_app, read_only_engine
from support.browser import chromium, watch
from support.webserver import serving

OLD, NEW = DEMO_VERSIONS[0][0], DEMO_VERSIONS[1][0]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    assert run_validator_demo(work) == 0  # the older version passes, the newer one alerts
    reports = {}
    for version, jobs, _ in DEMO_VERSIONS:
        for job in jobs:
            reports[job] = json.loads((work / "reports" / f"job-{job}" / "report.json").read_text())
            assert reports[job]["model_version"] == version
    return work / "history.sqlite", reports


@pytest.fixture(scope="module")
def site(demo):
    db, _ = demo
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    with serving(create_app(read_only_engine(str(db)))) as url:
        yield url
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before  # read-only: the store is untouched


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def _jobs_of(version):
    return next(jobs for v, jobs, _ in DEMO_VERSIONS if v == version)


def _open(browser, url):
    seen = watch(browser)
    response = seen.page.goto(url)
    assert response is not None and response.status == 200
    return seen


def test_model_versions_page(demo, site, browser):
    _, reports = demo
    seen = _open(browser, site + "/")
    page = seen.page
    for version in (OLD, NEW):
        reps = [reports[j] for j in _jobs_of(version)]
        tp = sum(r["detection"]["tp"] for r in reps)
        refs = sum(r["counts"]["references"] for r in reps)  # = Σ (tp + fn)
        preds = sum(r["counts"]["predictions"] for r in reps)  # = Σ (tp + fp)
        flips = sum(r["errors"]["flip_wrong_to_correct"] for r in reps)
        row = page.locator(f'#versions tr[data-version="{version}"]')

        def cell(col, row=row):
            cells = row.locator(f'td[data-col="{col}"]')
            return (cells.locator(".v") if cells.locator(".v").count() else cells).inner_text()

        assert cell("det_recall") == f"{tp / refs:.3f}" and cell("det_precision") == f"{tp / preds:.3f}"
        assert cell("flips_per_1000") == f"{flips / refs * 1000:.1f}"
        for c in ("wrong", "correct"):
            mean = statistics.mean(r["attribute"]["per_class"][c]["f1"] for r in reps)
            assert cell(f"f1_{c}") == f"{mean:.3f}"
        assert (cell("jobs"), cell("runs"), cell("frames")) == ("4", "4", "160")
        assert cell("persons") == f"{refs:,}"
        assert row.locator(".status").inner_text() == ("ok" if version == OLD else "flips-per-1000")
    page.locator(f'#versions tr[data-version="{OLD}"] a.version').click()
    assert page.locator("h1").inner_text() == f"Model version {OLD}"
    assert seen.problems() == []


def test_version_page_labels_and_drill_down_to_a_job_report(demo, site, browser):
    _, reports = demo
    seen = _open(browser, f"{site}/version?name={NEW}")
    page = seen.page
    reps = [reports[j] for j in _jobs_of(NEW)]
    for i, label in enumerate(("wrong", "correct")):
        detected = sum(r["attribute"]["row_totals"][i] for r in reps)  # matched references of the label
        missed = sum(r["attribute"]["missed"][label] for r in reps)
        rate = page.locator(f'#labels tr[data-label="{label}"] td[data-col="detection_rate"]').inner_text()
        assert rate == f"{detected / (detected + missed):.3f}"
    total = sum(r["errors"]["flip_wrong_to_correct"] for r in reps)
    assert page.locator('#error-details tr[data-error="flip_wrong_to_correct"] td').nth(
        1
    ).inner_text() == str(total)
    rows = page.locator("#jobs tbody tr")
    assert rows.count() == 4
    # newest first: the last job validated; its report is the same page as its report.html
    job = _jobs_of(NEW)[-1]
    assert rows.first.locator("a.cvat-job").inner_text() == str(job)
    rows.first.locator("a.report").click()
    rep = reports[job]
    assert page.locator("h1").inner_text().startswith(f"Job {job}")
    f1 = rep["attribute"]["per_class"]["wrong"]["f1"]
    assert page.locator('[data-kpi="f1_wrong"] .value').inner_text() == f"{f1:.3f}"
    # drift: the median of the version's runs before this one (never this run itself)
    earlier = [reports[j]["attribute"]["per_class"]["wrong"]["f1"] for j in _jobs_of(NEW)[:-1]]
    base = statistics.median(earlier)
    own = page.locator('[data-kpi="f1_wrong"] [data-compare="own"]').inner_text()
    assert own.startswith(
        f"{f1 - base:+.3f} vs own earlier runs of {NEW} (median of its first 3 earlier runs; drift)"
    )
    # the reference: the previous version, its runs pooled (mean F1 over its jobs)
    ref = statistics.mean(reports[j]["attribute"]["per_class"]["wrong"]["f1"] for j in _jobs_of(OLD))
    against = page.locator('[data-kpi="f1_wrong"] [data-compare="reference"]').inner_text()
    assert against.startswith(
        f"{f1 - ref:+.3f} vs reference {OLD} (previous version; 4 jobs pooled, unpaired): {ref:.3f}"
    )
    assert page.locator("#worst-frames figure").count() == len(rep["worst_frames"])
    assert seen.problems() == []


def test_trend_has_n_points_and_the_baseline_band(site, browser):
    seen = _open(browser, f"{site}/trend?version={NEW}")
    page = seen.page
    f1 = page.locator("#chart-f1")
    assert f1.locator('g.series[data-series="F1 wrong"] circle.point').count() == 4  # every run (< 10)
    assert f1.locator('g.series[data-series="F1 correct"] circle.point').count() == 4
    assert f1.locator("g.baseline").count() == 2
    assert page.locator("#chart-flips g.series circle.point").count() == 4
    assert page.locator("#trend-runs tr").count() == 1 + 4
    page.fill("input[name=n]", "2")
    page.click("button[type=submit]")
    assert parse_qs(urlsplit(page.url).query) == {"version": [NEW], "n": ["2"]}
    assert page.locator('#chart-f1 g.series[data-series="F1 wrong"] circle.point').count() == 2
    labels = page.locator("#chart-f1 g.series circle title").all_text_contents()
    last_two = [f"job {j}" for j in _jobs_of(NEW)[-2:]]
    assert [t.split(":")[0] for t in labels[:2]] == [f"F1 wrong {j}" for j in last_two]
    assert seen.problems() == []


def test_job_list_filters_and_cvat_links(demo, site, browser):
    _, reports = demo
    seen = _open(browser, f"{site}/jobs")
    page = seen.page
    assert page.locator("#jobs tbody tr").count() == 8
    page.select_option("select[name=task]", "12")
    page.select_option("select[name=version]", OLD)
    page.click("button[type=submit]")
    expected = sorted(j for j in _jobs_of(OLD) if reports[j]["source"]["task"] == 12)
    rows = page.locator("#jobs tbody tr")
    assert sorted(int(t) for t in rows.locator("a.cvat-job").all_inner_texts()) == expected == [102, 104]
    host = reports[102]["source"]["host"]
    for i in range(rows.count()):
        job = int(rows.nth(i).locator("a.cvat-job").inner_text())
        assert rows.nth(i).locator("a.cvat-job").get_attribute("href") == f"{host}/tasks/12/jobs/{job}"
        assert rows.nth(i).locator("a.cvat-task").get_attribute("href") == f"{host}/tasks/12"
        assert rows.nth(i).locator("a.cvat-project").get_attribute("href") == f"{host}/projects/3"
    assert seen.problems() == []


def test_alerts_page_shows_delivery_state_per_webhook(demo, site, browser):
    _, reports = demo
    seen = _open(browser, f"{site}/alerts")
    page = seen.page
    rows = page.locator("#alerts tbody tr")
    assert rows.count() == 4  # every run of the newer version (flips per 1,000 > 60), none of the older
    for i in range(4):
        row = rows.nth(i)
        job = int(row.locator("a.cvat-job").inner_text())
        assert job in _jobs_of(NEW) and row.get_attribute("data-rule") == "flips-per-1000"
        flips = reports[job]["errors"]["flip_wrong_to_correct"] / reports[job]["counts"]["references"] * 1000
        assert flips > 60
        assert row.locator('.delivery[data-target="ops-chat"]').get_attribute("data-state") == "sent"
        assert row.locator('.delivery[data-target="pager"]').get_attribute("data-state") == "failed"
    rows.first.locator("a.report").click()
    assert page.locator("h1").inner_text().startswith("Job ")
    assert seen.problems() == []


def _get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(req, timeout=10) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def test_token_gate_and_headers(demo, browser):
    db, _ = demo
    token = "tok-" + "x" * 30
    with serving(create_app(read_only_engine(str(db)), token=token)) as url:
        status, _, body = _get(url + "/")
        assert status == 401 and token not in body
        assert _get(url + "/healthz")[:3:2] == (200, "ok")  # probes need no token and learn nothing
        assert _get(url + "/", {"Authorization": "Bearer wrong"})[0] == 401
        status, headers, body = _get(url + "/alerts", {"Authorization": f"Bearer {token}"})
        assert status == 200 and token not in body
        assert headers["Content-Security-Policy"].startswith("default-src 'none'")
        status, headers, _ = _get(f"{url}/jobs?task=12&token={token}")
        assert status == 303 and headers["location"] == "/jobs?task=12"  # the token leaves the address bar
        assert f"ropewatch_token={token}" in headers["set-cookie"] and "HttpOnly" in headers["set-cookie"]
        seen = watch(browser)  # a person: opens the link with the token once, then browses with the cookie
        seen.page.goto(f"{url}/?token={token}")
        assert urlsplit(seen.page.url).query == "" and seen.page.locator("#versions tbody tr").count() == 2
        seen.page.goto(url + "/alerts")
        assert seen.page.locator("#alerts tbody tr").count() == 4 and seen.problems() == []


def test_serve_refuses_a_public_address_without_a_token_and_a_missing_store(
    demo, tmp_path, monkeypatch, capsys
):
    db, _ = demo
    monkeypatch.delenv("ROPEWATCH_SERVE_TOKEN", raising=False)
    assert main(["serve", "--db", str(db), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "ROPEWATCH_SERVE_TOKEN" in err and "--behind-proxy" in err and len(err.strip().splitlines()) == 1
    assert main(["serve", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert "no history store at" in capsys.readouterr().err
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    assert main(["serve", "--db", str(db), "--host", "0.0.0.0", "--token-file", str(empty)]) == 2
    assert "is empty" in capsys.readouterr().err
    assert not Path(tmp_path / "none.sqlite").exists()  # serving never creates a store
    import socket

    with socket.socket() as taken:  # a port another process listens on
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--db", str(db), "--port", str(port)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"ropewatch serve: cannot listen on 127.0.0.1:{port}: Address already in use"
    )


def test_bad_query_parameters_get_one_line(site):
    status, _, body = _get(site + "/jobs?page=abc")
    assert status == 400 and body == "page must be a whole number, got 'abc'"
    status, _, body = _get(site + "/runs/999999")
    assert status == 404 and "no run 999999" in body


def test_the_serve_command_end_to_end(demo, tmp_path):
    """`ropewatch serve` as a process: prints where it listens (the store without a password), answers,
    and stops on SIGTERM; a token from a file guards it."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time

    db, _ = demo
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token_file = tmp_path / "token"
    token_file.write_text("file-token-123\n")
    argv = [sys.executable, "-m", "ropewatch_validator", "serve", "--db", str(db), "--port", str(port)]
    proc = subprocess.Popen(
        [*argv, "--token-file", str(token_file)], stderr=subprocess.PIPE, text=True, env=os.environ.copy()
    )
    try:
        line = proc.stderr.readline()
        assert line.strip() == f"ropewatch serve: {db} at http://127.0.0.1:{port}/ (token required)"
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:  # the line comes before uvicorn listens
            try:
                if _get(url + "/healthz")[0] == 200:
                    break
            except urllib.error.URLError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert _get(url + "/")[0] == 401
        assert _get(url + "/", {"Authorization": "Bearer file-token-123"})[0] == 200
        assert _get(f"{url}//example.org/?token=file-token-123")[1]["location"] == "/example.org/"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert proc.returncode in (0, -signal.SIGTERM)  # uvicorn shuts down, then re-raises the signal


def test_the_store_is_shown_without_its_password():
    from ropewatch_validator.web.app import connection_label

    label = connection_label(read_only_engine("postgresql://ropewatch:s3cret-pw@db.internal:5432/history"))
    assert "s3cret-pw" not in label and label.startswith("postgresql+psycopg://ropewatch:***@db.internal")


RED, GREEN = "rgb(192, 57, 43)", "rgb(30, 132, 73)"  # --bad, --good of _base.html


def test_demo_newer_version_is_worse_on_flips_everywhere(demo, site, browser):
    """Issue 17, item 5: job 105 of the newer version fired flips-per-1000, yet its page showed the
    flips in green against a baseline of its own runs (itself included), the versions table showed no
    change, and report.html said "no baseline yet". Now every page compares it with the previous
    version, says so in the same words, and shows the worse figure in red."""
    db, reports = demo
    old = [reports[j] for j in _jobs_of(OLD)]
    old_rate = sum(r["errors"]["flip_wrong_to_correct"] for r in old) / sum(
        r["counts"]["references"] for r in old
    )
    job = _jobs_of(NEW)[0]
    rep = reports[job]
    rate = rep["errors"]["flip_wrong_to_correct"] / rep["counts"]["references"] * 1000
    label = f"vs reference {OLD} (previous version; 4 jobs pooled, unpaired): {old_rate * 1000:.1f}"

    def flips_card(page):
        card = page.locator('[data-kpi="flips_per_1000"] [data-compare="reference"]')
        assert card.get_attribute("data-verdict") == "worse"
        assert card.evaluate("e => getComputedStyle(e).color") == RED
        return card.inner_text()

    # the dashboard's run page, and the alert it names
    seen = watch(browser)
    seen.page.goto(site + f"/jobs?version={NEW}")
    seen.page.locator(f'#jobs tr:has(a.cvat-job:text-is("{job}")) a.report').click()
    dash = flips_card(seen.page)
    assert dash.startswith(f"{rate - old_rate * 1000:+.1f} {label} [95% CI ")
    assert seen.page.locator('#fired [data-rule="flips-per-1000"]').count() == 1
    f1 = seen.page.locator('[data-kpi="f1_wrong"] [data-compare="reference"]')  # lower F1: never green
    assert (
        f1.get_attribute("data-verdict") == "worse" and f1.evaluate("e => getComputedStyle(e).color") == RED
    )
    # report.html, written by validate-job before the run was stored: the same comparison, same words
    file_page = _open(browser, (db.parent / "reports" / f"job-{job}" / "report.html").as_uri())
    assert flips_card(file_page.page) == dash
    # the versions table: the newer version against the older, pooled, with an interval excluding 0
    seen.page.goto(site + "/")
    cell = seen.page.locator(f'#versions tr[data-version="{NEW}"] td[data-col="flips_per_1000"] .delta')
    assert (
        cell.get_attribute("data-verdict") == "worse"
        and cell.evaluate("e => getComputedStyle(e).color") == RED
    )
    new = [reports[j] for j in _jobs_of(NEW)]
    new_rate = sum(r["errors"]["flip_wrong_to_correct"] for r in new) / sum(
        r["counts"]["references"] for r in new
    )
    text = cell.inner_text()
    assert text.startswith(f"{(new_rate - old_rate) * 1000:+.1f} vs {OLD} [95% CI ")
    low = float(text.split("[95% CI ", 1)[1].split("–", 1)[0])
    assert low > 0  # worse beyond the jobs' spread
    # the alert text says the same
    seen.page.goto(site + "/alerts")
    message = seen.page.locator("#alerts tr", has_text=f"job {job} ").first.inner_text()
    assert f"vs reference {OLD} (previous version; 4 jobs pooled, unpaired): {old_rate * 1000:.4g}" in message
    assert message.rstrip().split("\n")[0] and ", worse" in message
    assert seen.problems() == [] and file_page.problems() == []
