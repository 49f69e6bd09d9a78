"""deploy/: the nuctl dry run, and every manifest parsed with a real parser."""

from __future__ import annotations

import configparser
import json
import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from croniter import croniter
from dockerfile_parse import DockerfileParser

from ropewatch_validator.ops.alert import load_config

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


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
        "wheels/ropewatch_core-0.2.0-py3-none-any.whl",
    } <= set(listed)
    assert (stage / "constraints.txt").read_text() == (DEPLOY / "constraints.txt").read_text()
    with zipfile.ZipFile(stage / "wheels" / "ropewatch_core-0.2.0-py3-none-any.whl") as whl:
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
    assert refused.returncode == 2 and "no detector" in refused.stderr and "--allow-no-detector" in refused.stderr
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
    entries = [
        line.split(None, 6)
        for line in (DEPLOY / "cron" / "ropewatch.cron").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(entries) == 1
    *when, user, command = entries[0]
    assert croniter.is_valid(" ".join(when)) and user == "ropewatch"
    assert "validate-job --project 3 --since last --rules /etc/ropewatch/rules.toml" in command
    assert ". /etc/ropewatch/ropewatch.env" in command  # secrets from a file, not the crontab


def read_unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string((DEPLOY / "cron" / name).read_text())
    return unit


def test_systemd_service_and_timer():
    service, timer = read_unit("ropewatch-validate.service"), read_unit("ropewatch-validate.timer")
    assert service["Service"]["Type"] == "oneshot"
    assert service["Service"]["ExecStart"].split()[:2] == [
        "/opt/ropewatch/.venv/bin/validate-job",
        "--project",
    ]
    assert service["Service"]["SuccessExitStatus"] == "1"
    assert service["Service"]["EnvironmentFile"] == "/etc/ropewatch/ropewatch.env"
    assert "network-online.target" in service["Unit"]["After"]
    assert timer["Timer"]["Unit"] == "ropewatch-validate.service"
    assert timer["Timer"]["OnCalendar"] == "*-*-* 02:15:00" and timer["Timer"]["Persistent"] == "true"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_k8s_cronjob_uses_secret_pvc_and_valid_rules(tmp_path):
    docs = list(yaml.safe_load_all((DEPLOY / "k8s" / "cronjob.yaml").read_text()))
    by_kind = {d["kind"]: d for d in docs}
    assert set(by_kind) == {"PersistentVolumeClaim", "ConfigMap", "CronJob"}
    secret = yaml.safe_load((DEPLOY / "k8s" / "secret.example.yaml").read_text())
    assert secret["kind"] == "Secret"
    cron = by_kind["CronJob"]
    assert cron["apiVersion"] == "batch/v1" and croniter.is_valid(cron["spec"]["schedule"])
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    [container] = pod["containers"]
    assert container["args"][0] == "validate-job"
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
    assert container["args"][container["args"].index("--rules") + 1].startswith(mounts["rules"])
    rules = tmp_path / "rules.toml"
    rules.write_text(by_kind["ConfigMap"]["data"]["rules.toml"])
    config = load_config(rules)
    assert [r.name for r in config.rules] == ["wrong-f1-low", "wrong-to-correct-flips"]
    assert config.webhooks[0].secret_env in {e["name"] for e in container["env"]}


def test_example_rules_file_loads():
    config = load_config(DEPLOY / "cron" / "rules.example.toml")
    assert len(config.rules) == 4 and [h.format for h in config.webhooks] == ["generic", "slack"]


def test_dockerfile():
    parser = DockerfileParser(path=str(DEPLOY / "docker" / "Dockerfile"))
    instructions = parser.structure
    froms = [i["value"] for i in instructions if i["instruction"] == "FROM"]
    assert froms == ["python:3.11-slim AS build", "python:3.11-slim"]
    for copy in (i["value"].split() for i in instructions if i["instruction"] == "COPY"):
        if not copy[0].startswith("--from"):
            assert all((REPO / src).exists() for src in copy[:-1]), copy
    assert json.loads(next(i["value"] for i in instructions if i["instruction"] == "ENTRYPOINT")) == [
        "ropewatch"
    ]
    assert [i["value"] for i in instructions if i["instruction"] == "USER"] == ["ropewatch"]
    assert "[postgres]" in next(
        i["value"] for i in instructions if i["instruction"] == "RUN" and "pip install" in i["value"]
    )
