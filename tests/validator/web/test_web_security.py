"""Issue 18 item 9: a stored host that is not an http(s) URL is never linked, and no page allows an
inline script it did not ship (the CSP names our scripts by hash, never 'unsafe-inline'): on the
dashboard (header) and in an offline report.html (meta tag), checked in Debian's chromium."""

from __future__ import annotations

import re
import urllib.request

import pytest

from ropewatch_validator.ops.history import open_store
from ropewatch_validator.render import html, links
from ropewatch_validator.render.model import ObjectRows
from ropewatch_validator.web.app import create_app, read_only_engine
from support.browser import chromium, watch
from support.webserver import serving

EVIL = "JaVaScRiPt:alert(1)"


@pytest.mark.parametrize(
    "host",
    [EVIL, " javascript:alert(1)", "data:text/html,<b>x</b>", "vbscript:x", "cvat.local", "ftp://cvat", ""],
)
def test_only_http_hosts_are_linked(host):
    assert links.job_url(host, 3, 7, 2, shape_id=9) is None
    assert links.task_url(host, 3) is None and links.project_url(host, 1) is None


def test_http_hosts_are_linked_without_credentials():
    assert (
        links.job_url("HTTP://alice:pw@cvat.local:8080/", 3, 7, 2)
        == "http://cvat.local:8080/tasks/3/jobs/7?frame=2"
    )
    assert links.project_url("https://cvat.example.org/sub", 4) == "https://cvat.example.org/sub/projects/4"


def _script_src(policy: str) -> str:
    return next(p.strip() for p in policy.split(";") if p.strip().startswith("script-src"))


def test_the_policy_allows_exactly_the_shipped_scripts():
    src = _script_src(html.csp())
    assert "unsafe-inline" not in src and "unsafe-eval" not in src and "*" not in src
    assert len(re.findall(r"'sha256-[A-Za-z0-9+/]+={0,2}'", src)) == len(html.SCRIPTS) == 1


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as r:
        return r.headers, r.read().decode()


def test_dashboard_pages_never_link_a_script_host(tmp_path, make_report):
    db = tmp_path / "history.sqlite"
    store = open_store(str(db))
    run_id, _ = store.record_run(make_report(job=7, task=3, project=1, host=EVIL))
    store.record_run(make_report(job=8, task=3, project=1, host="http://cvat.local:8080"))
    store.close()
    with serving(create_app(read_only_engine(str(db)))) as url:
        for path in ("/jobs", f"/runs/{run_id}", "/alerts", "/"):
            headers, body = _get(url + path)
            hrefs = re.findall(r'href="([^"]*)"', body)
            assert hrefs and not [h for h in hrefs if not (h.startswith(("/", "http://", "https://")))]
            assert "unsafe-inline" not in _script_src(headers["Content-Security-Policy"])
        _, jobs = _get(url + "/jobs")
        assert 'href="http://cvat.local:8080/tasks/3/jobs/8"' in jobs  # the http one is still linked


def _report_page(tmp_path, make_report):
    report = make_report(job=7, task=3, host=EVIL)
    cols = ["frame", "role", "error", "source", "iou", "best_iou", "score", "size", "shape_id", "track_id"]
    cols.append("safety_rope_use")
    rows = [
        [0, "reference", "missed", "manual", None, 0.198, None, "large", 11, None, "wrong"],
        [1, "prediction", "background", "auto", None, None, 0.9, "small", 12, None, "correct"],
        [2, "reference", "tp", "manual", 0.8, 0.8, None, "large", 13, None, "wrong"],
    ]
    report.objects = ObjectRows.model_construct(columns=cols, rows=rows)
    page = html.report_page(report)
    (tmp_path / "report.html").write_text(page)
    injected = page.replace("</body>", '<script>document.title = "injected";</script></body>')
    (tmp_path / "injected.html").write_text(injected)
    return tmp_path / "report.html", tmp_path / "injected.html"


@pytest.fixture(scope="module")
def browser():
    with chromium() as b:
        yield b


def test_offline_report_scripts_run_under_the_policy_and_others_do_not(tmp_path, make_report, browser):
    report, injected = _report_page(tmp_path, make_report)
    seen = watch(browser)
    seen.page.goto(report.as_uri())
    page = seen.page
    meta = page.locator('meta[http-equiv="Content-Security-Policy"]').get_attribute("content")
    assert meta == html.csp()
    assert page.locator("a[href]").count() == 0  # the host is a script: nothing links to it
    assert page.locator("#objects tbody tr:visible").count() == 3
    page.select_option("#filter-error", "missed")  # our script runs under the policy
    assert page.locator("#objects tbody tr:visible").count() == 1
    assert page.locator("#object-count").inner_text() == "1"
    assert seen.problems() == []
    other = watch(browser)
    other.page.goto(injected.as_uri())
    title = other.page.title()
    assert title == "ropewatch · job 7"  # the injected inline script was refused
    assert any("Content Security Policy" in p for p in other.problems())
