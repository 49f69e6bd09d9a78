"""The commands the deployment files start, read with real parsers (YAML, systemd's INI, the crontab,
the Dockerfile). The checks of the files and the test that runs them from the built image both read
them here, so the command that is tested is the one that ships."""

from __future__ import annotations

import configparser
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from dockerfile_parse import DockerfileParser

from support.paths import REPO

DEPLOY = REPO / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"


def k8s(name: str) -> dict[str, dict[str, Any]]:
    """The documents of ``deploy/k8s/<name>``, by kind."""
    return {d["kind"]: d for d in yaml.safe_load_all((DEPLOY / "k8s" / name).read_text())}


@dataclass(frozen=True)
class Workload:
    """The one container of a CronJob or Deployment, with its pod spec."""

    pod: dict[str, Any]
    container: dict[str, Any]

    @property
    def argv(self) -> list[str]:
        """What the container runs: the image's ENTRYPOINT, then the manifest's args."""
        return [*entrypoint(), *self.container["args"]]


def workload(name: str) -> Workload:
    docs = k8s(name)
    if "CronJob" in docs:
        pod = docs["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    else:
        pod = docs["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return Workload(pod, container)


def entrypoint() -> list[str]:
    instructions = DockerfileParser(path=str(DOCKERFILE)).structure
    return list(json.loads(next(i["value"] for i in instructions if i["instruction"] == "ENTRYPOINT")))


def image_tag() -> str:
    """The tag the manifests run (one for all of them)."""
    (tag,) = {workload(n).container["image"] for n in ("cronjob.yaml", "worker.yaml", "dashboard.yaml")}
    return str(tag)


def read_unit(name: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # systemd keys are case-sensitive
    unit.read_string((DEPLOY / "cron" / name).read_text())
    return unit


def as_ropewatch(argv: list[str]) -> list[str]:
    """A command line as ``ropewatch ...``: the program by its script name (a host's venv path is where
    it was installed, not part of the command), ``validate-job ...`` as ``ropewatch validate-job ...``."""
    program, *rest = argv
    name = Path(program).name
    assert name in ("ropewatch", "validate-job"), argv
    return ["ropewatch", *rest] if name == "ropewatch" else ["ropewatch", "validate-job", *rest]


def unit_argv(name: str) -> list[str]:
    """The ExecStart of a systemd unit in deploy/cron/."""
    return shlex.split(read_unit(name)["Service"]["ExecStart"])


def crontab_entry() -> tuple[list[str], str, list[str]]:
    """(schedule fields, user, shell words) of the one entry of deploy/cron/ropewatch.cron."""
    entries = [
        line.split(None, 6)
        for line in (DEPLOY / "cron" / "ropewatch.cron").read_text().splitlines()
        if line.strip() and not line.startswith("#") and "=" not in line.split()[0]
    ]
    assert len(entries) == 1, entries
    *when, user, command = entries[0]
    return when, user, shlex.split(command.replace(";", " ; "))


def cron_argv() -> list[str]:
    """The command the crontab line execs (after sourcing the env file, before the log redirect)."""
    _, _, script = crontab_entry()
    end = next(i for i, word in enumerate(script) if word.startswith(">>"))
    return script[script.index("exec") + 1 : end]


def with_option(argv: list[str], option: str, value: str) -> list[str]:
    """``argv`` with the value of ``option`` replaced: the environment's own value (a project id, an
    address) in a command that is otherwise the file's."""
    assert argv.count(option) == 1, (option, argv)
    at = argv.index(option) + 1
    return [*argv[:at], value, *argv[at + 1 :]]
