"""deploy/: the nuctl dry run, and every manifest parsed with a real parser."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from croniter import croniter
from dockerfile_parse import DockerfileParser
from packaging.specifiers import SpecifierSet

from ropewatch_validator.cli.main import build_parser
from ropewatch_validator.ops.alerts.model import Format
from ropewatch_validator.ops.alerts.rules import load_config
from ropewatch_validator.ops.schedule import EXIT_ALERT
from support.deploy_files import (
    DEPLOY,
    as_ropewatch,
    cron_argv,
    crontab_entry,
    image_tag,
    read_unit,
    unit_argv,
    with_option,
    workload,
)
from support.paths import REPO

CORE_WHEEL = f"ropewatch_core-{metadata.version('ropewatch-core')}-py3-none-any.whl"


def nightly_args(argv: list[str]) -> argparse.Namespace:
    """A scheduled command line, parsed by the real CLI: it must be a run that validates only the
    jobs changed since the last stored run and applies alert rules."""
    assert Path(argv[0]).name == "validate-job" or argv[0] == "validate-job", argv
    args = build_parser().parse_args(["validate-job", *argv[1:]])
    assert args.since == "last" and args.rules and (args.project or args.task or args.job_ids)
    return args


def dry_run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}  # no nuctl on PATH
    return subprocess.run(
        ["bash", str(DEPLOY / "nuclio" / "deploy.sh"), "--dry-run", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


@pytest.fixture
def function_dir(tmp_path: Path) -> Path:
    """Stand-in function files, so the script is tested apart from the real function."""
    func = tmp_path / "func"
    func.mkdir()
    for name in ("function.yaml", "function-gpu.yaml"):
        (func / name).write_text(f"metadata:\n  name: safety-rope\n# {name}\n")
    (func / "main.py").write_text("def handler(context, event):\n    return None\n")
    return func


@pytest.mark.parametrize(
    ("gpu", "spec", "device"), [(False, "function.yaml", "cpu"), (True, "function-gpu.yaml", "cuda")]
)
def test_dry_run_stages_function_wheel_constraints_and_prints_nuctl(
    tmp_path, function_dir, gpu, spec, device
):
    stage = tmp_path / "stage"
    ckpt = tmp_path / "models" / "rope-v3.pt"
    proc = dry_run(
        tmp_path,
        *(["--gpu"] if gpu else []),
        "--function-dir",
        str(function_dir),
        "--stage",
        str(stage),
        "--checkpoint",
        str(ckpt),
        "--detector",
        str(tmp_path / "det" / "frcnn.pth"),
    )
    assert proc.returncode == 0, proc.stderr
    tree, commands = proc.stdout.split("# commands\n")
    listed = tree.splitlines()[1:]
    assert {
        "function.yaml",
        "function-gpu.yaml",
        "main.py",
        "constraints.txt",
        f"wheels/{CORE_WHEEL}",
    } <= set(listed)
    assert (stage / "constraints.txt").read_text() == (DEPLOY / "constraints.txt").read_text()
    with zipfile.ZipFile(stage / "wheels" / CORE_WHEEL) as whl:
        names = set(whl.namelist())
    assert {"ropewatch_core/spec.py", "ropewatch_core/model/pipeline.py"} <= names
    assert not any(n.startswith(("ropewatch_validator/", "shared/", "validator/")) for n in names)
    first, deploy, listing = commands.strip().splitlines()
    assert first == "nuctl get project cvat --platform local || nuctl create project cvat --platform local"
    argv = shlex.split(deploy)
    opts = {argv[i]: argv[i + 1] for i in range(2, len(argv) - 1) if argv[i].startswith("--")}
    assert argv[:2] == ["nuctl", "deploy"]
    assert (opts["--project-name"], opts["--platform"], opts["--path"]) == ("cvat", "local", str(stage))
    assert opts["--file"] == str(stage / spec)
    assert json.loads(opts["--platform-config"]) == {"attributes": {"network": "cvat_cvat"}}
    envs = [argv[i + 1] for i, a in enumerate(argv) if a == "--env"]
    assert "--volume" not in argv  # nuctl 1.14 takes only SRC:DST there; ":ro" is rejected
    staged = yaml.safe_load((stage / spec).read_text())
    assert staged["metadata"]["name"] == "safety-rope"  # the rest of the file is kept
    assert staged["spec"]["volumes"] == [
        {
            "volume": {"name": "models", "hostPath": {"path": str(tmp_path / "models")}},
            "volumeMount": {"name": "models", "mountPath": "/opt/nuclio/models", "readOnly": True},
        },
        {
            "volume": {"name": "detector", "hostPath": {"path": str(tmp_path / "det")}},
            "volumeMount": {"name": "detector", "mountPath": "/opt/nuclio/detector", "readOnly": True},
        },
    ]
    assert yaml.safe_load((function_dir / spec).read_text()) == {"metadata": {"name": "safety-rope"}}
    assert envs == [
        "MODEL_PATH=/opt/nuclio/models/rope-v3.pt",
        "DETECTOR_PATH=/opt/nuclio/detector/frcnn.pth",
        f"DEVICE={device}",
    ]
    assert listing == "nuctl get function --platform local"


def test_dry_run_refuses_bad_input_with_one_line(tmp_path, function_dir):
    missing = dry_run(tmp_path, "--function-dir", str(function_dir), "--stage", str(tmp_path / "s1"))
    assert missing.returncode == 2 and "no checkpoint: pass --checkpoint" in missing.stderr
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "x").write_text("x")
    busy = dry_run(
        tmp_path,
        "--function-dir",
        str(function_dir),
        "--stage",
        str(tmp_path / "busy"),
        "--checkpoint",
        "a.pt",
        "--allow-no-detector",
    )
    assert busy.returncode == 2 and "is not empty" in busy.stderr
    unknown = dry_run(tmp_path, "--cpu")
    assert unknown.returncode == 2 and "unknown option --cpu" in unknown.stderr
    (function_dir / "function-gpu.yaml").unlink()
    nogpu = dry_run(tmp_path, "--gpu", "--function-dir", str(function_dir), "--checkpoint", "a.pt")
    assert nogpu.returncode == 2 and "function-gpu.yaml" in nogpu.stderr


def test_detector_is_required_unless_allowed(tmp_path, function_dir):
    ckpt = ("--function-dir", str(function_dir), "--checkpoint", "a.pt")
    refused = dry_run(tmp_path, *ckpt, "--stage", str(tmp_path / "s1"))
    assert (
        refused.returncode == 2
        and "no detector" in refused.stderr
        and "--allow-no-detector" in refused.stderr
    )
    assert not (tmp_path / "s1").exists()  # refused before anything was staged
    allowed = dry_run(tmp_path, *ckpt, "--stage", str(tmp_path / "s2"), "--allow-no-detector")
    assert allowed.returncode == 0 and "WARNING: no detector" in allowed.stderr
    assert "DETECTOR_PATH" not in allowed.stdout
    staged = yaml.safe_load((tmp_path / "s2" / "function.yaml").read_text())
    assert [v["volume"]["name"] for v in staged["spec"]["volumes"]] == ["models"]
    both = dry_run(tmp_path, *ckpt, "--detector", "d.pth", "--allow-no-detector")
    assert both.returncode == 2 and "contradict" in both.stderr


def test_real_deploy_without_nuctl_says_so(tmp_path, function_dir):
    ckpt = tmp_path / "rope.pt"
    ckpt.write_bytes(b"x")
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [
            "bash",
            str(DEPLOY / "nuclio" / "deploy.sh"),
            "--function-dir",
            str(function_dir),
            "--checkpoint",
            str(ckpt),
            "--allow-no-detector",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 2 and "nuctl not found" in proc.stderr


def test_crontab_line():
    when, user, script = crontab_entry()
    assert croniter.is_valid(" ".join(when)) and user != "root"
    sourced = script[script.index(".") + 1]  # secrets come from a file, not the crontab
    assert sourced == read_unit("ropewatch-validate.service")["Service"]["EnvironmentFile"]
    nightly_args(cron_argv())


def test_systemd_service_and_timer():
    service, timer = read_unit("ropewatch-validate.service"), read_unit("ropewatch-validate.timer")
    assert service["Service"]["Type"] == "oneshot"  # one run to completion per timer tick
    nightly_args(unit_argv("ropewatch-validate.service"))
    # "a rule fired" is the run doing its job, not a unit failure; "could not validate" (2) is
    assert service["Service"]["SuccessExitStatus"].split() == [str(EXIT_ALERT)]
    assert service["Service"]["User"] != "root"
    assert "network-online.target" in service["Unit"]["After"]
    assert timer["Timer"]["Unit"] == "ropewatch-validate.service"  # the file shipped beside it
    assert timer["Timer"]["OnCalendar"] and timer["Timer"]["Persistent"] == "true"  # missed runs catch up
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_k8s_cronjob_uses_secret_pvc_and_valid_rules(tmp_path):
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "cronjob.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    assert set(by_kind) == {"PersistentVolumeClaim", "ConfigMap", "CronJob"}
    secret = yaml.safe_load((DEPLOY / "k8s" / "secret.example.yaml").read_text())
    assert secret["kind"] == "Secret"
    cron = by_kind["CronJob"]
    assert cron["apiVersion"] == "batch/v1" and croniter.is_valid(cron["spec"]["schedule"])
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"  # two nights never overlap
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    args = nightly_args(container["args"])
    refs = [e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e]
    assert {r["name"] for r in refs} == {secret["metadata"]["name"]}
    assert {r["key"] for r in refs} == set(secret["stringData"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert (
        volumes["history"]["persistentVolumeClaim"]["claimName"]
        == by_kind["PersistentVolumeClaim"]["metadata"]["name"]
    )
    assert volumes["rules"]["configMap"]["name"] == by_kind["ConfigMap"]["metadata"]["name"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    rules_file = Path(args.rules)
    assert str(rules_file.parent) == mounts["rules"]
    rules = tmp_path / rules_file.name
    rules.write_text(by_kind["ConfigMap"]["data"][rules_file.name])  # the file the args name
    config = load_config(rules)
    assert config.rules and config.webhooks
    assert config.webhooks[0].secret_env in {e["name"] for e in container["env"]}


def test_example_rules_file_loads():
    config = load_config(DEPLOY / "cron" / "rules.example.toml")
    assert config.rules and config.webhooks and {h.format for h in config.webhooks} <= set(Format)
    # an example never holds a secret inline: each signing secret comes from the env or a file
    assert all(h.secret_env or h.secret_file for h in config.webhooks if h.format == "generic")


def test_dockerfile():
    validator = metadata.distribution("ropewatch")
    instructions = DockerfileParser(path=str(DEPLOY / "docker" / "Dockerfile")).structure
    froms = [i["value"].split() for i in instructions if i["instruction"] == "FROM"]
    assert len(froms) == 2 and froms[0][1:] == ["AS", "build"]  # wheels are built apart from the image
    base, _, tag = froms[1][0].partition(":")
    python = tag.split("-")[0]  # e.g. 3.11 of python:3.11-slim
    assert base == "python" and f"{python}.0" in SpecifierSet(validator.metadata["Requires-Python"])
    for copy in (i["value"].split() for i in instructions if i["instruction"] == "COPY"):
        if not copy[0].startswith("--from"):
            assert all((REPO / src).exists() for src in copy[:-1]), copy
    [entry] = json.loads(next(i["value"] for i in instructions if i["instruction"] == "ENTRYPOINT"))
    assert entry in {e.name for e in validator.entry_points if e.group == "console_scripts"}
    users = [i["value"] for i in instructions if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0")
    install = next(
        i["value"] for i in instructions if i["instruction"] == "RUN" and "pip install" in i["value"]
    )
    assert "-c /tmp/constraints.txt" in install  # the pinned set, copied in from deploy/constraints.txt
    extras = set(validator.metadata.get_all("Provides-Extra") or [])
    assert "postgres" in extras and "[postgres]" in install  # the image can use a PostgreSQL history


def worker_args(argv: list[str]) -> argparse.Namespace:
    """A worker command line, parsed by the real CLI: scans a scope, applies alert rules, skips what was
    validated (``--since last`` is the worker's default)."""
    assert Path(argv[0]).name == "ropewatch" or argv[0] == "worker", argv
    args = build_parser().parse_args(argv[1:] if Path(argv[0]).name == "ropewatch" else argv)
    assert args.command == "worker" and args.since == "last" and args.rules and (args.project or args.task)
    assert args.concurrency >= 1
    return args


def test_worker_unit_and_deployment_run_the_same_worker():
    """The systemd unit and the k8s Deployment start the same `ropewatch worker` command, which the real
    parser accepts, against the team's PostgreSQL from the environment (ROPEWATCH_DB)."""
    service = read_unit("ropewatch-worker.service")["Service"]
    assert service["Type"] == "simple" and service["User"] != "root" and service["KillSignal"] == "SIGTERM"
    assert service["Restart"] == "always"  # a worker that lost its database stops with exit 0
    worker_args(unit_argv("ropewatch-worker.service"))
    (deployment,) = yaml.safe_load_all((DEPLOY / "k8s" / "worker.yaml").read_text())
    assert deployment["kind"] == "Deployment" and deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60  # SIGTERM lets the job in flight finish
    (container,) = pod["containers"]
    worker_args(container["args"])
    db = next(e for e in container["env"] if e["name"] == "ROPEWATCH_DB")
    assert "optional" not in db["valueFrom"]["secretKeyRef"]  # a worker without the team's store is no worker


def test_systemd_cron_and_kubernetes_run_the_same_commands():
    """One command per job, whichever scheduler starts it: the systemd units and the crontab run what the
    manifests run in the image (its ENTRYPOINT, then the args), which tests/realcvat/test_realcvat_image.py
    runs from the built image. The dashboard's pod listens on every address (behind its token), the
    host's unit on loopback."""
    nightly = workload("cronjob.yaml").argv
    assert as_ropewatch(unit_argv("ropewatch-validate.service")) == nightly
    assert as_ropewatch(cron_argv()) == nightly
    assert as_ropewatch(unit_argv("ropewatch-worker.service")) == workload("worker.yaml").argv
    dashboard = workload("dashboard.yaml").argv
    assert as_ropewatch(unit_argv("ropewatch-serve.service")) == with_option(dashboard, "--host", "127.0.0.1")
    assert (
        image_tag() == f"ropewatch-validator:{metadata.version('ropewatch')}"
    )  # the image this checkout builds
