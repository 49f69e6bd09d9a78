"""The two deployables install only their own stack, measured in clean venvs (issue 12).

- the Nuclio function's image: ``ropewatch-core[model]`` + nuclio-sdk: torch, no validator stack;
- the validator's: ``ropewatch-core`` + ``ropewatch``: no torch, and ``validate-job`` runs.

pip takes every wheel from this machine's disk (its find-links and cache) under
deploy/constraints.txt. The projects are installed from copies, so building them never writes into
the checkout. Slow (the function's venv unpacks torch): one test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support.paths import REPO

pytestmark = pytest.mark.slow  # builds wheels and installs each deployable into a fresh venv

CONSTRAINTS = REPO / "deploy" / "constraints.txt"
VALIDATOR_STACK = {"pandas", "scipy", "matplotlib", "sqlalchemy", "cvat-sdk", "rich"}
MODEL_STACK = {"torch", "timm", "torchvision"}
SKIP_COPY = shutil.ignore_patterns("*.egg-info", "__pycache__", "build", ".venv", ".mypy_cache")


def venv_with(root: Path, name: str, *requirements: str) -> tuple[Path, Path]:
    """A fresh venv with ``requirements`` installed; returns (its python, its site-packages)."""
    env = root / name
    subprocess.run([sys.executable, "-m", "venv", str(env)], check=True)
    python = env / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", str(CONSTRAINTS),
         *requirements],
        check=True, cwd=root, timeout=900,
    )  # fmt: skip
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    return python, Path(site)


def installed(python: Path) -> set[str]:
    """Distribution names in a venv, normalized as pip does (lower case, ``_`` → ``-``)."""
    code = "import importlib.metadata as m; print('\\n'.join(d.name for d in m.distributions()))"
    out = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout
    return {name.strip().lower().replace("_", "-") for name in out.splitlines() if name.strip()}


def size_mib(path: Path) -> float:
    """What ``du -s --apparent-size`` counts: the bytes of every file, links not followed."""
    total = sum(
        os.lstat(os.path.join(folder, f)).st_size for folder, _, files in os.walk(path) for f in files
    )
    return total / 2**20


def test_each_deployable_installs_only_its_own_stack():
    root = Path(tempfile.mkdtemp(prefix="ropewatch-installs-"))
    try:  # removed at the end, not kept like tmp_path: the function's venv is several GiB
        shutil.copytree(REPO / "shared", root / "src" / "shared", ignore=SKIP_COPY)
        shutil.copytree(REPO / "validator", root / "src" / "validator", ignore=SKIP_COPY)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / name, root / "src" / name)

        fn_python, fn_site = venv_with(root, "function", "./src/shared[model]", "nuclio-sdk")
        fn_packages = installed(fn_python)
        assert MODEL_STACK | {"ropewatch-core", "nuclio-sdk"} <= fn_packages
        assert not fn_packages & (VALIDATOR_STACK | {"ropewatch"})
        probe = "import ropewatch_core.model.pipeline, nuclio_sdk; import importlib.util as u; "
        probe += "print(u.find_spec('ropewatch_validator') is None)"
        assert subprocess.run(
            [str(fn_python), "-c", probe], check=True, capture_output=True, text=True
        ).stdout.split() == ["True"]
        fn_mib = size_mib(fn_site)
        shutil.rmtree(root / "function")  # before the second venv: keep the disk use to one at a time

        val_python, val_site = venv_with(root, "validator", "./src/shared", "./src")
        val_packages = installed(val_python)
        assert VALIDATOR_STACK | {"ropewatch", "ropewatch-core"} <= val_packages
        assert not val_packages & MODEL_STACK
        help_text = subprocess.run(
            [str(val_python.parent / "validate-job"), "--help"], check=True, capture_output=True, text=True
        ).stdout
        assert "usage: ropewatch validate-job" in help_text
        val_mib = size_mib(val_site)
        print(f"\nsite-packages: function {fn_mib:,.0f} MiB, validator {val_mib:,.0f} MiB")
        # torch, with its CUDA libraries, is what the validator no longer carries
        assert fn_mib > 4 * val_mib
    finally:
        shutil.rmtree(root, ignore_errors=True)
