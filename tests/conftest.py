"""Fixtures shared by the whole suite."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CVAT_DATA = Path(__file__).parent / "data" / "cvat"  # vendored CVAT schema + dumps (see its README)


@pytest.fixture(autouse=True)
def _private_lock_dir(tmp_path, monkeypatch):
    """validate-job's per-job locks live in a per-test folder, never the user's."""
    monkeypatch.setenv("ROPEWATCH_LOCK_DIR", str(tmp_path / "locks"))


@pytest.fixture(scope="session")
def cvat_schema_path() -> Path:
    path = CVAT_DATA / "schema.yml"
    assert path.is_file(), f"CVAT schema missing at {path}"
    return path


@pytest.fixture(scope="session")
def cvat_assets() -> Path:
    return CVAT_DATA / "assets"


# --- history / alerts / schedule (helper C) ---------------------------------------------------
import glob  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster on a loopback port, from Debian's server binaries.

    initdb refuses to run as root, so as root the cluster is created and run as `postgres`.
    Yields a server URL without a database name.
    """
    initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    assert initdbs, "PostgreSQL server binaries missing: install Debian's 'postgresql' (bash .ci/run does)"
    bindir = Path(initdbs[-1]).parent
    root = Path(tempfile.mkdtemp(prefix="ropewatch-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def pg(*args: str) -> None:
        subprocess.run([*as_user, *args], check=True, capture_output=True, timeout=60)

    pg(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")
    pg(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(root / "server.log"),
        "-w",
        "-o",
        f"-h 127.0.0.1 -p {port} -k {root} -F -c fsync=off",
        "start",
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def history_db(request, tmp_path):
    """A fresh, empty history database URL on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.sqlite'}"
        return
    import psycopg

    server = request.getfixturevalue("postgres_server")
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{server}/{name}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def build_report(
    job=1,
    updated="2026-11-20T10:00:00.000000Z",
    model_version="v1",
    cm=((40, 5), (3, 52)),
    det=(100, 4, 6),
    host="http://cvat.local:8080",
    task=10,
    project=3,
):
    """A typed report per the brief's contract, its metrics worked out by hand from a
    wrong/correct confusion matrix (rows = reference) and detection counts (tp, fp, fn)."""
    from ropewatch_validator.render.model import Report

    def ratio(a, b):
        return a / b if b else None

    def f1(p, r):
        return None if p is None or r is None or p + r == 0 else 2 * p * r / (p + r)

    (ww, wc), (cw, cc) = cm
    tp, fp, fn = det
    per_class = {}
    for name, hit, pred, ref in (("wrong", ww, ww + cw, ww + wc), ("correct", cc, cc + wc, cw + cc)):
        p, r = ratio(hit, pred), ratio(hit, ref)
        per_class[name] = {"precision": p, "recall": r, "f1": f1(p, r), "support": ref}
    dp, dr = ratio(tp, tp + fp), ratio(tp, tp + fn)
    no_buckets = {"size": [], "aspect": [], "occluded": []}
    return Report.model_validate(
        {
            "schema_version": "1.0",
            "generated_at": updated,
            "source": {
                "host": host,
                "job": job,
                "task": task,
                "project": project,
                "job_updated_date": updated,
                "reference_mode": "manual",
                "reference_job": None,
            },
            "model_version": model_version,
            "settings": {
                "iou": 0.5,
                "low_iou": 0.1,
                "label": "person",
                "attribute": "safety_rope_use",
                "values": ["wrong", "correct"],
                "pred_sources": ["auto", "semi-auto"],
                "ref_sources": ["manual", "file", "consensus"],
                "edited_sources": ["semi-auto"],
                "top_k": 10,
            },
            "counts": {
                "frames": 50,
                "frames_evaluated": 50,
                "frames_deleted": 0,
                "predictions": tp + fp,
                "references": tp + fn,
                "semi_auto": 0,
                "skipped_shapes": {},
            },
            "detection": {
                "tp": tp,
                "fp": fp,
                "fn": fn,
                "precision": dp,
                "recall": dr,
                "f1": f1(dp, dr),
                "ap": None,
            },
            "attribute": {
                "name": "safety_rope_use",
                "labels": ["wrong", "correct"],
                "confusion_matrix": [[ww, wc], [cw, cc]],
                "row_totals": [ww + wc, cw + cc],
                "column_totals": [ww + cw, wc + cc],
                "missed": {"wrong": 0, "correct": 0},
                "extra": {"wrong": 0, "correct": 0},
                "per_class": per_class,
                "accuracy": (ww + cc) / (ww + wc + cw + cc),
                "macro_f1": sum((c["f1"] or 0.0) for c in per_class.values()) / 2,
                "pairs_without_value": 0,
            },
            "errors": {
                "missed": fn,
                "background": fp,
                "localization": 0,
                "duplicate": 0,
                "flip_wrong_to_correct": wc,
                "flip_correct_to_wrong": cw,
                "edited_by_person": 0,
            },
            "breakdowns": {**no_buckets, "position_grid": {"rows": 4, "cols": 4, "errors": [[0] * 4] * 4}},
            "worst_frames": [],
            "objects": {"columns": ["role", "frame"], "rows": [["reference", 0]] * (tp + fn)},
            "pr_curve": None,
        }
    )


@pytest.fixture
def make_report():
    return build_report


# --- function / checkpoint / model / image (helper A) ------------------------------------------


@pytest.fixture(scope="session")
def tiny_config():
    """The real backbone family at 64x48 with one block: fast, same code path as production."""
    from ropewatch_core.model.classifier import ModelConfig

    return ModelConfig(img_size=(64, 48), head_width=16, roi_size=3, backbone_kwargs={"depth": 1})


@pytest.fixture(scope="session")
def tiny_checkpoint_dict(tiny_config):
    from ropewatch_core.model.checkpoint import demo_checkpoint

    return demo_checkpoint(tiny_config, version="tiny-v1")


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_checkpoint_dict, tmp_path_factory) -> Path:
    from ropewatch_core.model.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    save_checkpoint(tiny_checkpoint_dict, path)
    return path


@pytest.fixture(scope="session")
def person_detector_weights(tmp_path_factory) -> Path:
    """A real torchvision detector whose classifier bias makes every proposal a confident COCO person,
    so detector-path tests have detections to check without downloadable weights."""
    import torch

    from ropewatch_core.model.detector import build_architecture

    torch.manual_seed(0)
    model = build_architecture("fasterrcnn_mobilenet_v3_large_320_fpn")
    state = model.state_dict()
    state["roi_heads.box_predictor.cls_score.weight"].zero_()
    state["roi_heads.box_predictor.cls_score.bias"].fill_(-10.0)
    state["roi_heads.box_predictor.cls_score.bias"][1] = 10.0
    path = tmp_path_factory.mktemp("detector") / "person.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def fixed_logit_checkpoint(tiny_config):
    """Factory: a checkpoint whose head always outputs ``bias`` (zero last-layer weights), so the decision
    can be checked against hand-computed sigmoid values."""
    import torch

    from ropewatch_core.model.checkpoint import demo_checkpoint

    def make(labels=("wrong", "correct"), bias=(0.0, 0.0), thr=0.5, temperature=1.0, version="fixed"):
        ckpt = demo_checkpoint(tiny_config, labels=tuple(labels), thr=thr, version=version)
        ckpt["state_dict"]["head.3.weight"] = torch.zeros_like(ckpt["state_dict"]["head.3.weight"])
        ckpt["state_dict"]["head.3.bias"] = torch.tensor(bias, dtype=torch.float32)
        ckpt["temperature"] = temperature
        return ckpt

    return make


# --- tracing predictions to requests (helper D) -------------------------------------------------


def _nullable_refs(node):
    """drf-spectacular (CVAT's schema generator) writes a nullable reference as
    ``{allOf: [{$ref}], nullable: true}``; strict OAS 3.0 validators don't let ``nullable`` reach into
    ``allOf`` and reject the ``null`` that real CVAT returns there (see the dumps in tests/data/cvat).
    Read it as the generator means it: the referenced schema, or null."""
    if isinstance(node, list):
        return [_nullable_refs(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable_refs(v) for k, v in node.items()}
    if node.get("nullable") and "allOf" in node and "type" not in node:
        rest = {k: v for k, v in node.items() if k not in ("allOf", "nullable")}
        return {
            **rest,
            "anyOf": [{"allOf": node["allOf"]}, {"type": "object", "nullable": True, "enum": [None]}],
        }
    return node


@pytest.fixture(scope="session")
def cvat_schema_errors(cvat_schema_path):
    """``errors(component, body)``: messages of ``body`` against ``#/components/schemas/<component>``."""
    import yaml
    from openapi_schema_validator import OAS30Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT4

    spec = _nullable_refs(yaml.safe_load(cvat_schema_path.read_text(encoding="utf-8")))
    registry = Registry().with_resource(
        "urn:cvat", Resource.from_contents(spec, default_specification=DRAFT4)
    )

    def errors(component: str, body: object) -> list[str]:
        validator = OAS30Validator({"$ref": f"urn:cvat#/components/schemas/{component}"}, registry=registry)
        return [e.message for e in validator.iter_errors(body)]

    return errors


@pytest.fixture
def cvat_conn(httpserver):
    """A validator connection (cvat-sdk ApiClient, timeouts, retries) pointed at pytest-httpserver."""
    from ropewatch_validator.cvat.fetch import connect

    return connect(httpserver.url_for("").rstrip("/"), timeout=5.0)


# --- the function under Nuclio's real wrapper (../shared/nuclio/processor.py) --------------------


@pytest.fixture
def nuclio():
    """Factory: ``nuclio(env, workers=2)`` starts the processor stand-in on the function (not yet ready:
    call ``.wait_ready()``); every one started is stopped (SIGTERM, then SIGKILL) at teardown."""
    from support.nuclio import NuclioFunction

    started: list[NuclioFunction] = []

    def start(env: dict, workers: int = 2, extra_args: tuple[str, ...] = ()) -> NuclioFunction:
        fn = NuclioFunction({k: str(v) for k, v in env.items()}, workers, extra_args)
        started.append(fn)
        return fn

    yield start
    for fn in started:
        fn.stop()


# --- fast filter (cascade, issue 14) -------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_filter_dict():
    """A random-init filter checkpoint of timm's smallest ResNet at 32 px: the production code path."""
    import torch

    from ropewatch_core.model.fast_filter import build_model, new_checkpoint

    torch.manual_seed(0)
    return new_checkpoint(build_model("test_resnet"), "test_resnet", 32, band=(0.2, 0.8), version="filter-v1")
