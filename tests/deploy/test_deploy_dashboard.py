"""The dashboard's deployment files: each command line parses with the real CLI, the systemd unit
listens on loopback only, the Kubernetes Deployment has the token from its Secret, read-only history
and probes on /healthz, and the Service reaches its pods."""

from __future__ import annotations

import configparser
import shlex

import yaml

from ropewatch_validator.cli.main import build_parser
from ropewatch_validator.cli.serve import ENV_TOKEN, is_loopback
from support.paths import REPO

DEPLOY = REPO / "deploy"


def test_systemd_serve_unit_listens_on_loopback():
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str
    unit.read_string((DEPLOY / "cron" / "ropewatch-serve.service").read_text())
    exe, *argv = shlex.split(unit["Service"]["ExecStart"])
    assert exe == "/opt/ropewatch/.venv/bin/ropewatch"
    args = build_parser().parse_args(argv)
    assert args.command == "serve" and is_loopback(args.host) and not args.behind_proxy
    assert unit["Service"]["EnvironmentFile"] == "/etc/ropewatch/ropewatch.env"  # same store as the timer
    assert unit["Service"]["ReadOnlyPaths"] == "/var/lib/ropewatch"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_k8s_dashboard_deployment_and_service():
    docs = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "k8s" / "dashboard.yaml").read_text())}
    assert set(docs) == {"Deployment", "Service"}
    dep, svc = docs["Deployment"], docs["Service"]
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert svc["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    [container] = pod["spec"]["containers"]
    args = build_parser().parse_args(container["args"])
    assert args.command == "serve" and not is_loopback(args.host) and not args.behind_proxy
    env = {e["name"]: e for e in container["env"]}
    secret = yaml.safe_load((DEPLOY / "k8s" / "dashboard-secret.example.yaml").read_text())
    ref = env[ENV_TOKEN]["valueFrom"]["secretKeyRef"]  # a public address needs the token
    assert (ref["name"], ref["key"]) == (secret["metadata"]["name"], "serve-token")
    assert ref["key"] in secret["stringData"] and "optional" not in ref
    [port] = container["ports"]
    assert port["containerPort"] == args.port and svc["spec"]["ports"][0]["targetPort"] == port["name"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    [mount] = container["volumeMounts"]
    assert (
        mount["readOnly"] is True and pod["spec"]["volumes"][0]["persistentVolumeClaim"]["readOnly"] is True
    )
    cron = {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "k8s" / "cronjob.yaml").read_text())}
    claim = cron["PersistentVolumeClaim"]["metadata"]["name"]
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == claim  # the CronJob's store
