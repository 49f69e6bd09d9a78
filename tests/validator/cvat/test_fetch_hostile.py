"""A hostile or broken CVAT: endless paging, trickled bytes, long Retry-After, non-JSON answers, TLS on an
HTTP port, credentials in the host URL. Each gives one line naming host and endpoint, within a bound."""

from __future__ import annotations

import json
import threading
import time

import pytest
import urllib3
from werkzeug.wrappers import Response

from ropewatch_validator.cvat import client, fetch
from ropewatch_validator.cvat.frames import cvat_frame_fetcher, frame_fingerprints
from ropewatch_validator.sandbox import server as sandbox
from ropewatch_validator.sandbox import synthetic
from support.hostile import raw_server, trickling_server


def _labels(conn):
    return client.list_all(conn, "labels of job 1", conn.api_client.labels_api.list, job_id=1)


def test_next_pointing_at_itself_stops_on_the_second_page(httpserver, cvat_conn):
    seen = []

    def same_page(request):
        seen.append(request.args.get("page"))
        url = httpserver.url_for("/api/labels") + "?page=1"
        body = {"count": 5000, "next": url, "previous": None, "results": [{"id": 1}]}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request("/api/labels").respond_with_handler(same_page)
    with pytest.raises(client.FetchError, match=r"labels of job 1 on http://localhost:\d+: paging does not"):
        _labels(cvat_conn)
    assert seen == ["1", "2"]  # the repeated `next` is caught on page 2, not after thousands


def test_pages_are_capped_by_count(httpserver, cvat_conn):
    """`next` keeps moving; count 4 at the first page's 2 items needs ceil(4 / 2) = 2 pages, but page 2
    holds 1 item and still points on: a third page is refused."""
    seen = []

    def moving(request):
        page = int(request.args["page"])
        seen.append(page)
        nxt = httpserver.url_for("/api/labels") + f"?page={page + 1}"
        items = [{"id": 1}, {"id": 2}] if page == 1 else [{"id": page + 1}]
        return Response(
            json.dumps({"count": 4, "next": nxt, "results": items}), content_type="application/json"
        )

    httpserver.expect_request("/api/labels").respond_with_handler(moving)
    with pytest.raises(client.FetchError, match="page 2 of 2 by count 4"):
        _labels(cvat_conn)
    assert seen == [1, 2]


def test_list_stops_once_count_items_are_read(httpserver, cvat_conn):
    def page(request):
        n = int(request.args["page"])
        nxt = httpserver.url_for("/api/labels") + f"?page={n + 1}"
        body = {"count": 2, "next": nxt, "results": [{"id": n}]}
        return Response(json.dumps(body), content_type="application/json")

    httpserver.expect_request("/api/labels").respond_with_handler(page)
    assert _labels(cvat_conn) == [{"id": 1}, {"id": 2}]


def test_a_trickling_server_is_cut_at_the_request_deadline():
    with trickling_server(0.2, body_bytes=60) as url:  # 12 s of drip
        conn = client.connect(client.ConnectionSettings(url, timeout=2.0, retries=1, deadline=1.5))
        with pytest.raises(client.FetchError) as err:
            fetch.fetch_job(conn, 1)
    # each read gets a byte within 0.2 s < --timeout 2, so only the 1.5 s total deadline can end it
    assert str(err.value) == (
        f"job 1 on {url}: no complete answer within 1.5 s (the request's total deadline, --deadline)"
    )


def test_a_trickled_head_is_cut_at_the_request_deadline():
    """The status line, then a header byte every 0.2 s for 12 s, then a valid JSON answer: each read is
    within --timeout and the request runs on the caller's thread, so only the watchdog can end it at
    1.5 s (a deadline that did not hold would get the JSON and no error)."""

    def drip_head(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(60):
            conn.sendall(b"a")
            time.sleep(0.2)
        conn.sendall(b"\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")

    with raw_server(drip_head) as url:
        conn = client.connect(client.ConnectionSettings(url, timeout=2.0, retries=1, deadline=1.5))
        with pytest.raises(client.FetchError) as err:
            client.get_json(conn, "job 1", conn.api_client.jobs_api.retrieve, 1)
    assert str(err.value) == (
        f"job 1 on {url}: no complete answer within 1.5 s (the request's total deadline, --deadline)"
    )


def test_waits_between_retries_never_run_past_the_deadline(httpserver, monkeypatch):
    """Every answer is 503 with Retry-After 10 (the cap): urllib3 is asked to wait at most what is left
    of the 1 s deadline, and no attempt starts after it."""
    httpserver.expect_request("/api/jobs/1").respond_with_data(
        "busy", status=503, headers={"Retry-After": "10"}
    )
    waits: list[float] = []
    sleep = time.sleep

    me = threading.current_thread()

    def wait(seconds: float) -> None:  # urllib3's wait (this thread's: time.sleep is global), recorded
        if threading.current_thread() is me:
            waits.append(seconds)
        sleep(seconds)

    monkeypatch.setattr(urllib3.util.retry.time, "sleep", wait)
    conn = client.connect(
        client.ConnectionSettings(httpserver.url_for("").rstrip("/"), retries=5, deadline=1.0)
    )
    with pytest.raises(client.FetchError, match=r"no complete answer within 1 s"):
        client.get_json(conn, "job 1", conn.api_client.jobs_api.retrieve, 1)
    assert len(waits) == 1 and 0 < waits[0] <= 1.0  # not the 10 s asked
    assert len(httpserver.log) == 1  # the one wait ran to the deadline; no second attempt


def test_a_frame_cut_at_its_deadline_leaves_the_other_frames_whole():
    """One frame's answer stalls past the deadline; the frames fetched concurrently over the same
    connection pool, before and after it, still come whole and equal to what the server holds."""
    state = sandbox.CvatState()
    state.add(synthetic.generate(6))
    state.fail(0, count=1, path_contains="number=3&", delay_s=2.5)
    with sandbox.serve(state) as (url, _):
        conn = client.connect(
            client.ConnectionSettings(url, timeout=10.0, retries=0, deadline=1.0, pool_size=4)
        )
        fps = frame_fingerprints(
            cvat_frame_fetcher(conn, 101), range(6), job_id=101, chunks_updated_date="x", workers=4
        )
        again = frame_fingerprints(
            cvat_frame_fetcher(conn, 101), range(6), job_id=101, chunks_updated_date="x", workers=4
        )
    assert fps["error"].tolist()[3] == (
        f"FetchError: frame 3 of job 101 on {url}: no complete answer within 1 s "
        "(the request's total deadline, --deadline)"
    )
    keys = ["frame", "sha256", "pixel_sha256"]
    assert fps[keys].drop(index=3).equals(again[keys].drop(index=3)) and again["error"].isna().all()


def test_a_body_that_stalls_past_the_read_timeout_is_one_line():
    """Head sent, then 3 s of silence: the body read times out (before: a raw ReadTimeoutError)."""
    with trickling_server(3.0) as url:
        conn = client.connect(client.ConnectionSettings(url, timeout=0.5, retries=0, deadline=60))
        with pytest.raises(client.FetchError) as err:
            fetch.fetch_job(conn, 1)
    assert str(err.value) == f"job 1 on {url}: server not answering (read timed out; --timeout)"


def test_the_job_deadline_bounds_every_request_of_the_job():
    with trickling_server(0.2, body_bytes=60) as url:  # 12 s of drip against a 1 s job deadline
        conn = client.connect(client.ConnectionSettings(url, timeout=2.0, retries=0, deadline=60))
        with (
            conn.job_deadline(1.0),
            pytest.raises(client.FetchError, match="no complete answer before the job's deadline"),
        ):
            fetch.fetch_job(conn, 1)
        with conn.job_deadline(0.0), pytest.raises(client.FetchError, match="the job's deadline has passed"):
            fetch.fetch_job(conn, 1)


def test_retry_after_is_capped(httpserver, monkeypatch):
    """Retry-After: 20 is waited at most RETRY_AFTER_CAP_S (0.3 s here); the retry then succeeds."""
    monkeypatch.setattr(client, "RETRY_AFTER_CAP_S", 0.3)
    httpserver.expect_ordered_request("/api/jobs/1").respond_with_data(
        "busy", status=503, headers={"Retry-After": "20"}
    )
    httpserver.expect_ordered_request("/api/jobs/1").respond_with_json({"id": 1})
    waits: list[float] = []
    me, sleep = threading.current_thread(), time.sleep

    def wait(seconds: float) -> None:  # urllib3's wait (this thread's: time.sleep is global), recorded
        if threading.current_thread() is me:
            waits.append(seconds)
        else:
            sleep(seconds)

    monkeypatch.setattr(urllib3.util.retry.time, "sleep", wait)
    conn = client.connect(client.ConnectionSettings(httpserver.url_for("").rstrip("/"), retries=1, timeout=5))
    assert client.get_json(conn, "job 1", conn.api_client.jobs_api.retrieve, 1) == {"id": 1}
    assert waits == [0.3]


@pytest.mark.parametrize(
    ("body", "content_type", "came_back"),
    [
        ("<html><body>Login</body></html>", "text/html", "HTTP 200 text/html starting '<html><body>Login"),
        ('{"id": 1, "task_id": ', "application/json", 'HTTP 200 application/json starting \'{"id": 1'),
        ("", "application/json", "HTTP 200 application/json starting ''"),
    ],
)
def test_non_json_answers_name_host_endpoint_and_what_came_back(
    httpserver, cvat_conn, body, content_type, came_back
):
    httpserver.expect_request("/api/jobs/1").respond_with_data(body, content_type=content_type)
    with pytest.raises(client.FetchError) as err:
        client.get_json(cvat_conn, "job 1", cvat_conn.api_client.jobs_api.retrieve, 1)
    line = str(err.value)
    assert line.startswith(f"job 1 on {cvat_conn.host} (/api/jobs/1): expected JSON, got {came_back}")
    assert "\n" not in line


@pytest.mark.parametrize("body", [[{"id": 1}], {"count": 1}, "text", {"results": {"id": 1}}])
def test_a_list_answer_without_results_is_one_line(httpserver, cvat_conn, body):
    httpserver.expect_request("/api/labels").respond_with_json(body)
    with pytest.raises(
        client.FetchError, match=r"labels of job 1 on .*: expected a page with 'results', got"
    ):
        _labels(cvat_conn)


def test_https_to_an_http_port_names_the_tls_failure(httpserver):
    conn = client.connect(
        client.ConnectionSettings(
            httpserver.url_for("").rstrip("/").replace("http://", "https://"), retries=0
        )
    )
    with pytest.raises(
        client.FetchError, match=r"job 1 on https://localhost:\d+: TLS handshake failed, is it"
    ):
        client.get_json(conn, "job 1", conn.api_client.jobs_api.retrieve, 1)


def test_server_url_keeps_a_path_after_the_port_and_drops_credentials():
    assert client.server_url("http://cvat.example.com/cvat", None) == "http://cvat.example.com:8080/cvat"
    assert client.server_url("cvat.example.com/cvat/", 9000) == "http://cvat.example.com:9000/cvat"
    assert client.server_url("https://u:p@cvat.example.com/cvat", None) == "https://cvat.example.com/cvat"
    assert client.server_url("http://u:p@h:81", None) == "http://h:81"
    assert client.redact_url("http://alice:s3cr%40t@h:81/x") == "http://***@h:81/x"
    for bad in ("http://h:port", "ftp://h", "http://"):
        with pytest.raises(client.FetchError, match="--server-host"):
            client.server_url(bad, None)


def test_credentials_in_the_host_url_are_basic_auth_and_never_the_host():
    state = sandbox.CvatState(basic=("alice", "s3cr:t"))
    state.add(synthetic.generate(4))
    with sandbox.serve(state) as (url, _):
        conn = client.connect(client.ConnectionSettings(url.replace("http://", "http://alice:s3cr%3At@")))
        assert conn.host == url and len(fetch.fetch_job(conn, 101).frames) == 4
