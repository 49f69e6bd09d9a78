"""The webhook receiver's rules without a server: HMAC verification, which updates queue a job, the
identity of a body whatever its key order, and the store's dedupe (its HTTP path runs against a real CVAT
in tests/realcvat/test_realcvat_webhook.py)."""

from __future__ import annotations

import hashlib
import hmac
import json

from ropewatch_validator.cli.main import main
from ropewatch_validator.ops.history import open_store
from ropewatch_validator.ops.loop_store import accept_webhook, queued_jobs
from ropewatch_validator.ops.webhook_receiver import digest, trigger, verified

JOB = {"id": 5, "url": "http://cvat.local:8080/api/jobs/5", "state": "completed", "stage": "annotation"}


def test_signature_is_hmac_sha256_of_the_exact_body():
    body = b'{"event": "update:job"}'
    good = "sha256=" + hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert verified(b"k", body, good)
    assert not verified(b"other", body, good)
    assert not verified(b"k", body + b" ", good)
    assert not verified(b"k", body, None) and not verified(b"k", body, good.upper())


def test_which_updates_queue_a_job():
    assert trigger({"event": "update:job", "job": JOB, "before_update": {"state": "in progress"}}) == (
        "http://cvat.local:8080",
        5,
        "state:completed",
    )
    accepted = {**JOB, "state": "in progress", "stage": "acceptance"}
    assert trigger({"event": "update:job", "job": accepted, "before_update": {"stage": "validation"}})[2] == (
        "stage:acceptance"
    )
    # completed before and still: another field changed; other events; a body without a job url
    assert trigger({"event": "update:job", "job": JOB, "before_update": {"assignee": None}}) is None
    assert trigger({"event": "update:task", "job": JOB, "before_update": {"state": "new"}}) is None
    assert (
        trigger({"event": "update:job", "job": {**JOB, "url": None}, "before_update": {"state": "new"}})
        is None
    )
    assert trigger(["not", "an", "object"]) is None


def test_a_body_is_the_same_whatever_its_key_order():
    a = {"event": "update:job", "job": JOB, "webhook_id": 1}
    b = json.loads(json.dumps(dict(reversed(list(a.items())))))
    assert digest(a) == digest(b) and digest(a) != digest({**a, "webhook_id": 2})


def test_store_dedupes_bodies_and_waiting_jobs(tmp_path):
    store = open_store(str(tmp_path / "h.sqlite"))
    job = ("http://cvat.local:8080", 5, "state:completed")
    assert accept_webhook(store, "d1", "update:job", job) is True
    assert accept_webhook(store, "d1", "update:job", job) is False  # the same body again
    assert accept_webhook(store, "d2", "update:job", job) is True  # a new body, the job already waits
    assert accept_webhook(store, "d3", "update:job", None) is True
    assert [(q.host, q.job_id, q.reason) for q in queued_jobs(store)] == [job]
    store.close()


def test_listen_without_a_secret_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ROPEWATCH_CVAT_WEBHOOK_SECRET", raising=False)
    assert main(["listen", "--db", str(tmp_path / "h.sqlite")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "ropewatch listen: no webhook secret: set $ROPEWATCH_CVAT_WEBHOOK_SECRET or give --secret-file"
    )
