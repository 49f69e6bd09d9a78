"""A real Docker engine from ``../shared/docker`` (no registry, host networking only), its CLI, and the
``docker run`` options that give a container what a Kubernetes pod spec in deploy/k8s/ gives it.

The engine keeps its state (images, build cache) in ``${ROPEWATCH_DOCKER_STATE:-/var/tmp/ropewatch-docker-
state}``, outside the clone: the first start installs docker.io and builds ``python:3.11-slim`` (1-2
minutes), later starts take seconds."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.deploy_files import Workload
from support.kit import SHARED, exports

STATE = Path(os.environ.get("ROPEWATCH_DOCKER_STATE", "/var/tmp/ropewatch-docker-state"))


@dataclass(frozen=True)
class Docker:
    """The docker CLI against one engine."""

    host: str  # DOCKER_HOST

    def __call__(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "DOCKER_HOST": self.host},
        )
        if check:
            assert done.returncode == 0, f"docker {args[0]} ({done.returncode}): {done.stderr[-3000:]}"
        return done

    def answers(self) -> bool:
        return self("info", timeout=30, check=False).returncode == 0


def start_engine(state: Path = STATE) -> tuple[Docker, bool]:
    """The engine of ``state``, started unless it already runs; True when this call started it."""
    was_running = Docker(f"unix://{state / 'docker.sock'}").answers() if state.is_dir() else False
    done = subprocess.run(
        ["bash", str(SHARED / "docker" / "start.sh"), str(state)], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"docker start.sh failed ({done.returncode}): {done.stderr[-2000:]}"
    return Docker(exports(done.stdout)["DOCKER_HOST"]), not was_running


def stop_engine(state: Path = STATE) -> None:
    subprocess.run(["bash", str(SHARED / "docker" / "stop.sh"), str(state)], capture_output=True, timeout=120)


def pod_run_options(
    work: Workload,
    *,
    claims: Mapping[str, Path],
    config_maps: Mapping[str, Mapping[str, str]],
    secrets: Mapping[tuple[str, str], str],
    env: Mapping[str, str],
    scratch: Path,
) -> list[str]:
    """``docker run`` options for the pod's container, read from its spec: the env (literal values, each
    ``secretKeyRef`` from ``secrets`` by (Secret, key), an optional one left out when absent; ``env``
    replaces the literal values that name the environment, such as the CVAT address), its volumes at
    their mount paths (a claim as a host folder, a ConfigMap written under ``scratch``; read-only where
    the spec says), the pod's user, a read-only root file system where the container asks for one, and
    host networking (the only network of this engine)."""
    options = ["--network", "host"]
    for var in work.container.get("env", []):
        name = var["name"]
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            if (ref["name"], ref["key"]) not in secrets:
                assert ref.get("optional"), f"Secret {ref['name']}/{ref['key']} is required"
                continue
            value = secrets[(ref["name"], ref["key"])]
        else:
            value = env.get(name, var["value"])
        options += ["-e", f"{name}={value}"]
    mounts = {}
    for volume in work.pod.get("volumes", []):
        mounts[volume["name"]] = _volume_source(volume, claims, config_maps, scratch)
    for mount in work.container.get("volumeMounts", []):
        suffix = ":ro" if mount.get("readOnly") else ""
        options += ["-v", f"{mounts[mount['name']]}:{mount['mountPath']}{suffix}"]
    security: dict[str, Any] = work.pod.get("securityContext", {})
    if "runAsUser" in security:
        options += ["--user", f"{security['runAsUser']}:{security.get('fsGroup', security['runAsUser'])}"]
    if work.container.get("securityContext", {}).get("readOnlyRootFilesystem"):
        options.append("--read-only")
    return options


def _volume_source(
    volume: dict[str, Any],
    claims: Mapping[str, Path],
    config_maps: Mapping[str, Mapping[str, str]],
    scratch: Path,
) -> Path:
    if "persistentVolumeClaim" in volume:
        return claims[volume["persistentVolumeClaim"]["claimName"]]
    name = volume["configMap"]["name"]
    folder = scratch / f"configmap-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    for file, text in config_maps[name].items():
        (folder / file).write_text(text)
    return folder


def shared_folder(path: Path) -> Path:
    """A host folder the image's user (uid 10001) can write into, whoever runs the suite."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    return path
