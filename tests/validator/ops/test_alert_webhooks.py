"""Webhook delivery against real local HTTP receivers: signatures, retries, outbox, no duplicates."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time

import pytest
from pytest_httpserver import HTTPServer
from werkzeug.wrappers import Request, Response

from ropewatch_validator.ops.alerts.delivery import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, Notifier
from ropewatch_validator.ops.alerts.messages import render_body
from ropewatch_validator.ops.alerts.model import Alert, Format
from ropewatch_validator.ops.alerts.rules import AlertConfig, Rule, Webhook, record_and_queue
from ropewatch_validator.ops.history import open_store
from support.hostile import raw_server
from support.webserver import free_port

RULE = Rule(name="wrong-f1-low", metric="attribute.per_class.wrong.f1", op="<", threshold=0.95)
SECRET = "hook-secret-4d8f"


def config_for(*hooks: Webhook) -> AlertConfig:
    return AlertConfig(rules=(RULE,), webhooks=hooks, report_url="https://r.example/{job}")


def queue(store, config, report) -> list[Alert]:
    fired, _ = record_and_queue(store, report, config, [h.name for h in config.webhooks])
    return fired


def test_signed_generic_alert_delivered_once(history_db, httpserver, make_report, monkeypatch, capsys):
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    httpserver.expect_request("/hook", method="POST").respond_with_data("ok")
    hook = Webhook(name="ops", url=httpserver.url_for("/hook"), secret_env="HOOK_SECRET", backoff_s=0.01)
    config, store = config_for(hook), open_store(history_db)
    report = make_report(job=4)
    [alert] = queue(store, config, report)
    notifier = Notifier(config.webhooks)
    assert notifier.flush(store).sent == 1
    [(request, _)] = httpserver.log
    expected = "sha256=" + hmac.new(SECRET.encode(), request.get_data(), hashlib.sha256).hexdigest()
    assert request.headers[SIGNATURE_HEADER] == expected
    assert request.headers[IDEMPOTENCY_HEADER] == alert.key
    body = json.loads(request.get_data())
    assert (body["type"], body["job"], body["rule"], body["model_version"]) == (
        "ropewatch.alert",
        4,
        "wrong-f1-low",
        "v1",
    )
    assert body["threshold"] == 0.95 and body["report_url"] == "https://r.example/4"
    # The same job state again, and more flushes: nothing new is queued or sent.
    assert queue(store, config, report)[0].key == alert.key
    assert notifier.flush(store).sent == 0 and notifier.flush(store).failed == 0
    assert len(httpserver.log) == 1
    assert [d["status"] for d in store.delivery_status()] == ["sent"]
    printed = capsys.readouterr()
    assert SECRET not in printed.out + printed.err
    store.close()


def test_500_then_ok_is_retried_within_one_run(history_db, httpserver, make_report):
    httpserver.expect_ordered_request("/hook").respond_with_data("busy", status=500)
    httpserver.expect_ordered_request("/hook").respond_with_data("ok")
    config, store = (
        config_for(Webhook(name="ops", url=httpserver.url_for("/hook"), backoff_s=0.01)),
        open_store(history_db),
    )
    queue(store, config, make_report())
    assert Notifier(config.webhooks).flush(store).sent == 1
    keys = {req.headers[IDEMPOTENCY_HEADER] for req, _ in httpserver.log}
    assert len(httpserver.log) == 2 and len(keys) == 1  # a retry carries the same idempotency key
    httpserver.check_assertions()
    store.close()


def test_receiver_down_keeps_alert_in_outbox_until_next_run(history_db, make_report, capsys):
    port = free_port()
    hook = Webhook(name="ops", url=f"http://127.0.0.1:{port}/t0ken-in-path", retries=1, backoff_s=0.01)
    config, store = config_for(hook), open_store(history_db)
    queue(store, config, make_report())
    result = Notifier(config.webhooks).flush(store)
    assert (result.sent, result.failed) == (0, 1) and "gave up after 1 retries" in result.errors[0]
    [row] = store.delivery_status()
    assert (row["status"], row["attempts"]) == ("pending", 1) and "t0ken" not in row["last_error"]
    printed = capsys.readouterr()
    assert "t0ken" not in printed.out + printed.err  # webhook URLs can hold tokens: never logged
    receiver = HTTPServer("127.0.0.1", port)
    receiver.expect_request("/t0ken-in-path").respond_with_data("ok")
    receiver.start()
    try:
        assert Notifier(config.webhooks).flush(store).sent == 1  # the next run delivers it
        assert Notifier(config.webhooks).flush(store).sent == 0
        assert len(receiver.log) == 1
    finally:
        receiver.stop()
    store.close()


def test_slow_receiver_times_out_then_delivers(tmp_path, make_report):
    release = threading.Event()

    def slow(request: Request) -> Response:
        release.wait(5)
        return Response("late")

    receiver = HTTPServer("127.0.0.1", 0, threaded=True)
    receiver.expect_ordered_request("/hook").respond_with_handler(slow)
    receiver.expect_ordered_request("/hook").respond_with_data("ok")
    receiver.start()
    try:
        hook = Webhook(name="ops", url=receiver.url_for("/hook"), timeout_s=0.3, retries=0)
        config, store = config_for(hook), open_store(str(tmp_path / "h.sqlite"))
        queue(store, config, make_report())
        result = Notifier(config.webhooks).flush(store)
        assert result.failed == 1 and "no answer within timeout_s=0.3" in result.errors[0]
        release.set()
        assert Notifier(config.webhooks).flush(store).sent == 1
        assert [d["status"] for d in store.delivery_status()] == ["sent"]
    finally:
        release.set()
        receiver.stop()
    store.close()


def test_two_targets_are_tracked_separately(tmp_path, httpserver, make_report):
    httpserver.expect_request("/ok").respond_with_data("ok")
    httpserver.expect_request("/bad").respond_with_data("no", status=400)
    hooks = (
        Webhook(name="good", url=httpserver.url_for("/ok"), format="slack"),
        Webhook(name="broken", url=httpserver.url_for("/bad"), format="teams", retries=0),
    )
    config, store = config_for(*hooks), open_store(str(tmp_path / "h.sqlite"))
    queue(store, config, make_report())
    result = Notifier(config.webhooks).flush(store)
    assert (result.sent, result.failed, result.errors) == (1, 1, ("broken: HTTP 400",))
    assert {d["target"]: d["status"] for d in store.delivery_status()} == {
        "good": "sent",
        "broken": "pending",
    }
    Notifier(config.webhooks).flush(store)
    assert sum(1 for req, _ in httpserver.log if req.path == "/ok") == 1  # the sent one is not re-sent
    store.close()


def test_missing_secret_keeps_alert_pending_with_clear_reason(tmp_path, httpserver, make_report, monkeypatch):
    monkeypatch.delenv("NOT_SET_SECRET", raising=False)
    hook = Webhook(name="ops", url=httpserver.url_for("/hook"), secret_env="NOT_SET_SECRET")
    config, store = config_for(hook), open_store(str(tmp_path / "h.sqlite"))
    queue(store, config, make_report())
    assert Notifier(config.webhooks).flush(store).errors == (
        "ops: webhook 'ops': environment variable NOT_SET_SECRET is not set",
    )
    assert httpserver.log == []
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    httpserver.expect_request("/hook").respond_with_data("ok")
    filed = config_for(Webhook(name="ops", url=httpserver.url_for("/hook"), secret_file=str(secret_file)))
    assert Notifier(filed.webhooks).flush(store).sent == 1
    request = httpserver.log[0][0]
    assert hmac.compare_digest(
        request.headers[SIGNATURE_HEADER],
        "sha256=" + hmac.new(SECRET.encode(), request.get_data(), hashlib.sha256).hexdigest(),
    )
    store.close()


@pytest.mark.parametrize("fmt", ["slack", "teams"])
def test_chat_bodies_name_job_rule_value_and_link(fmt, make_report):
    from ropewatch_validator.ops.alerts.rules import fired_alerts

    [alert] = fired_alerts(make_report(job=12), config_for())
    body = json.loads(render_body(alert, Format(fmt)))
    text = json.dumps(body)
    for needle in ("wrong-f1-low", "12", "v1", "https://r.example/12", "0.95"):
        assert needle in text
    if fmt == "slack":
        assert body["text"] == alert.message and body["blocks"][0]["type"] == "section"
    else:
        card = body["attachments"][0]
        assert card["contentType"] == "application/vnd.microsoft.card.adaptive"
        assert (
            card["content"]["type"] == "AdaptiveCard"
            and card["content"]["actions"][0]["url"] == "https://r.example/12"
        )


# -- issue 18, items 2-4: what a receiver must not be able to do --------------------------------------
@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_a_failed_delivery_and_nothing_reaches_the_other_host(
    status, tmp_path, httpserver, make_report, monkeypatch
):
    """Before: 301/302 became a GET on the other host with the signature and key, 307/308 sent it the
    signed body, and the outbox said sent."""
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    elsewhere = HTTPServer("127.0.0.1", 0)
    elsewhere.expect_request("/stolen").respond_with_data("thanks")
    elsewhere.start()
    try:
        httpserver.expect_request("/hook").respond_with_data(
            "moved", status=status, headers={"Location": elsewhere.url_for("/stolen")}
        )
        hook = Webhook(name="ops", url=httpserver.url_for("/hook"), secret_env="HOOK_SECRET", backoff_s=0.01)
        config, store = config_for(hook), open_store(str(tmp_path / "h.sqlite"))
        queue(store, config, make_report())
        result = Notifier(config.webhooks).flush(store)
        assert result.errors == (f"ops: HTTP {status}: redirects are not followed (configure the final URL)",)
        assert elsewhere.log == [] and len(httpserver.log) == 1  # not followed, and not retried
        [row] = store.delivery_status()
        assert (row["status"], row["attempts"]) == ("pending", 1)  # it stays in the outbox
    finally:
        elsewhere.stop()
    store.close()


def test_a_trickled_answer_is_cut_at_the_deadline_of_the_whole_delivery(tmp_path, make_report):
    """Before: ``timeout_s`` bounded one socket read; a head sent a byte every 0.2 s (each read well
    inside the timeout) kept the delivery waiting for as long as the receiver liked, then counted it."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Padding: " + b"x" * 200 + b"\r\n\r\n"

    def trickle(conn):
        for i in range(len(head)):
            conn.sendall(head[i : i + 1])
            time.sleep(0.2)

    with raw_server(trickle) as url:
        hook = Webhook(name="ops", url=url + "/hook", timeout_s=1, retries=2, backoff_s=0.01)
        config, store = config_for(hook), open_store(str(tmp_path / "h.sqlite"))
        queue(store, config, make_report())
        result = Notifier(config.webhooks).flush(store)
    assert (result.sent, result.failed) == (0, 1)
    assert "no answer within timeout_s=1 (the whole delivery)" in result.errors[0]
    assert [d["status"] for d in store.delivery_status()] == ["pending"]
    store.close()


@pytest.mark.parametrize(
    ("retry_after", "timeout_s", "waits", "error"),
    [
        ("20", 1, [], "HTTP 503; a retry in 20 s would pass timeout_s=1"),  # before: slept the 20 s
        ("2", 100, [2.0], "gave up after 1 retries: HTTP 503"),  # a wait that fits is honoured
        ("3600", 10_000, [30.0], "gave up after 1 retries: HTTP 503"),  # capped at RETRY_AFTER_CAP_S
    ],
)
def test_retry_after_is_capped_and_never_waited_past_the_deadline(
    retry_after, timeout_s, waits, error, tmp_path, httpserver, make_report, monkeypatch
):
    from ropewatch_validator.ops.alerts import delivery

    slept: list[float] = []
    monkeypatch.setattr(delivery.time, "sleep", slept.append)  # the waits asked for, not taken
    httpserver.expect_request("/hook").respond_with_data(
        "busy", status=503, headers={"Retry-After": retry_after}
    )
    hook = Webhook(name="ops", url=httpserver.url_for("/hook"), timeout_s=timeout_s, retries=1)
    config, store = config_for(hook), open_store(str(tmp_path / "h.sqlite"))
    queue(store, config, make_report())
    assert Notifier(config.webhooks).flush(store).errors == (f"ops: {error}",)
    assert slept == waits
    store.close()


def test_a_huge_answer_is_not_read(tmp_path, make_report):
    """Before: the body was read whole (a 300 MiB answer raised RSS by 604 MiB). Now the status line
    and headers decide; the receiver gets to write little more than the sockets' buffers."""
    size, written = 300 * 2**20, []

    def flood(conn):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
        conn.sendall(f"Content-Length: {size}\r\n\r\n".encode())
        chunk = b"0" * 2**16
        total = 0
        try:
            while total < size:
                conn.sendall(chunk)
                total += len(chunk)
        finally:
            written.append(total)

    with raw_server(flood) as url:
        hook = Webhook(name="ops", url=url + "/hook", timeout_s=30)
        config, store = config_for(hook), open_store(str(tmp_path / "h.sqlite"))
        queue(store, config, make_report())
        assert Notifier(config.webhooks).flush(store).sent == 1
        deadline = time.monotonic() + 30
        while not written and time.monotonic() < deadline:  # the server notices the closed socket
            time.sleep(0.05)
    assert written and written[0] < 32 * 2**20  # the loopback buffers, not the 300 MiB
    store.close()


def test_a_refused_delivery_is_tried_once_per_run_not_once_per_later_job(tmp_path, make_report):
    """A batch flushes after every job that fired: the demo's refused 'pager' was retried after each
    later job (attempts 1 -> 4 in one run). Now each (alert, target) is tried once per run; the next run
    (a new Notifier) tries it again."""

    with socket.socket() as probe:  # a port nobody listens on: every POST is refused
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    hook = Webhook(name="pager", url=f"http://127.0.0.1:{closed}/hook", timeout_s=2, retries=0)
    config, store = config_for(hook), open_store(str(tmp_path / "h.sqlite"))
    queue(store, config, make_report(job=1))
    notifier = Notifier(config.webhooks)
    first = notifier.flush(store)
    (error,) = first.errors
    assert error.startswith("pager: ") and error.endswith("(no retries configured)")
    queue(store, config, make_report(job=2))  # a later job of the same run fires too
    second = notifier.flush(store)
    assert second.failed == 1  # only the new alert: the first one waits for the next run
    assert Notifier(config.webhooks).flush(store).failed == 2  # the next run tries both again
    assert {d["attempts"] for d in store.delivery_status()} == {2}
