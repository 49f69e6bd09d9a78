"""Fixtures shared by the whole suite."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

REPO = Path(__file__).resolve().parents[1]
CVAT_DATA = Path(__file__).parent / "data" / "cvat"  # vendored CVAT schema + dumps (see its README)


REALCVAT = Path(__file__).parent / "realcvat"


def pytest_collection_modifyitems(config, items):
    """Marks by what a test needs (declared in pyproject.toml): the real-CVAT tier by its folder or the
    ``real_cvat`` fixture, the browser, PostgreSQL and Docker tests by the fixture that starts them
    (``history_db`` marks its own param)."""
    for item in items:
        if REALCVAT in item.path.parents or "real_cvat" in item.fixturenames:
            item.add_marker(pytest.mark.realcvat)
        if "browser" in item.fixturenames:
            item.add_marker(pytest.mark.browser)
        if "postgres_server" in item.fixturenames:
            item.add_marker(pytest.mark.postgres)
        if "docker_engine" in item.fixturenames:
            item.add_marker(pytest.mark.docker)


@pytest.fixture(autouse=True)
def _private_lock_dir(tmp_path, monkeypatch):
    """validate-job's per-job locks live in a per-test folder, never the user's."""
    monkeypatch.setenv("ROPEWATCH_LOCK_DIR", str(tmp_path / "locks"))


@pytest.fixture(autouse=True)
def _work_in_tmp_path(tmp_path, monkeypatch):
    """Each test runs in its own folder, so defaults relative to the working directory (validate-job's
    ``.ropewatch/frames`` cache, ``ropewatch-demo/``...) never write into the checkout."""
    monkeypatch.chdir(tmp_path)


# Hypothesis keeps its example database and caches in .hypothesis/ under the directory pytest starts
# in: a temporary folder instead, removed when the run ends.
_HYPOTHESIS_HOME = tempfile.mkdtemp(prefix="ropewatch-hypothesis-")
set_hypothesis_home_dir(_HYPOTHESIS_HOME)
atexit.register(shutil.rmtree, _HYPOTHESIS_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def real_cvat():
    """The real CVAT server of the session (``support.real_cvat``: the tier, or ``CVAT_URL``); the tasks
    named ``real_cvat.name(...)`` are deleted at its end."""
    from support.real_cvat import real_cvat_session

    with real_cvat_session() as cvat:
        yield cvat


@pytest.fixture(scope="session")
def cvat_schema_path() -> Path:
    path = CVAT_DATA / "schema.yml"
    assert path.is_file(), f"CVAT schema missing at {path}"
    return path


@pytest.fixture(scope="session")
def cvat_assets() -> Path:
    return CVAT_DATA / "assets"


# --- history / alerts / schedule -------------------------------------------------------------------
import uuid  # noqa: E402


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL cluster for the session (``support.postgres.Cluster``); yields a server
    URL without a database name."""
    from support.postgres import throwaway_server

    with throwaway_server() as url:
        yield url


@pytest.fixture
def postgres_db(postgres_server):
    """A fresh, empty database on the session's PostgreSQL; its URL."""
    import psycopg

    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{postgres_server}/{name}"
    with psycopg.connect(f"{postgres_server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def history_db(request, tmp_path):
    """A fresh, empty history database URL on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'history.sqlite'}"
    return request.getfixturevalue("postgres_db")


@pytest.fixture(scope="session")
def docker_engine():
    """A real Docker engine (``support.docker``; no registry, host networking only). Stopped at the end
    of the session only when this session started it; its images stay in its state folder."""
    from support.docker import start_engine, stop_engine

    docker, started = start_engine()
    try:
        yield docker
    finally:
        if started:
            stop_engine()


@pytest.fixture
def make_report():
    from support.reports import build_report

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
    from ropewatch_validator.cvat.client import ConnectionSettings, connect

    return connect(ConnectionSettings(httpserver.url_for("").rstrip("/"), timeout=5.0))


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
