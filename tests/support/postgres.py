"""A throwaway PostgreSQL cluster on a loopback port, from Debian's server binaries, that a test can
also restart (team mode: workers must reconnect and lose nothing)."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.webserver import free_port


class Cluster:
    """initdb refuses to run as root, so as root the cluster is created and run as ``postgres``."""

    def __init__(self) -> None:
        initdbs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
        assert initdbs, (
            "PostgreSQL server binaries missing: install Debian's 'postgresql' (bash .ci/run does)"
        )
        self.bindir = Path(initdbs[-1]).parent
        self.root = Path(tempfile.mkdtemp(prefix="ropewatch-pg-"))
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.data, self.port = self.root / "data", free_port()
        self._pg("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    @property
    def url(self) -> str:
        """The server's URL without a database name."""
        return f"postgresql://postgres@127.0.0.1:{self.port}"

    def _pg(self, tool: str, *args: str) -> None:
        subprocess.run(
            [*self.as_user, str(self.bindir / tool), *args], check=True, capture_output=True, timeout=60
        )

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -F -c fsync=off"
        self._pg(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-o", options, "start"
        )

    def stop(self) -> None:
        """An immediate stop: every connection is cut, as when the database host goes away."""
        self._pg("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@contextmanager
def throwaway_server() -> Iterator[str]:
    """A :class:`Cluster` started for the block, stopped and removed after it; yields its server URL."""
    cluster = Cluster()
    cluster.start()
    try:
        yield cluster.url
    finally:
        cluster.stop()
        cluster.remove()
