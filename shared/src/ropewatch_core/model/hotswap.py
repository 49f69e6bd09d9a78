"""Hot-swap of a model file, the one implementation for the expert and the fast filter.

The file is watched by (mtime, size, inode); when that changes its sha256 is compared and a new file is
loaded and validated (dry forward pass included) before it replaces the served model. A file that
fails is reported once (``on_error``) and the previous model keeps serving, so a bad rollout never
takes the function down. A bad file at start-up raises: there is nothing to keep serving.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from ropewatch_core.model.checkpoint import CheckpointError, file_sha256
from ropewatch_core.records import one_line


class _Loaded(Protocol):
    sha256: str


T = TypeVar("T", bound=_Loaded)


class HotSwap(Generic[T]):
    def __init__(
        self,
        path: str | os.PathLike,
        load: Callable[[str], T],
        on_error: Callable[[CheckpointError], None] | None = None,
    ) -> None:
        self.path, self.load, self.on_error = str(path), load, on_error
        self._lock = threading.Lock()
        try:
            self._stat_key = self._stat()  # before loading: a change after this is seen by the next request
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {self.path}: no such file") from None
        except OSError as exc:
            raise CheckpointError(f"checkpoint {self.path}: {one_line(exc)}") from None
        self.value: T = load(self.path)
        self._rejected: tuple | None = None

    def _stat(self) -> tuple:
        st = os.stat(self.path)
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def current(self) -> T:
        """The model to serve now: reloaded when the file changed, kept when the new file is broken."""
        with self._lock:
            try:
                key = self._stat()
            except OSError as exc:  # file moved away mid-rollout: keep serving
                key = ("missing", str(exc))
            if key == self._stat_key or key == self._rejected:
                return self.value
            try:
                if file_sha256(self.path) != self.value.sha256:
                    self.value = self.load(self.path)
                self._stat_key, self._rejected = key, None
            except Exception as exc:  # whatever breaks, the served model stays and the file is tried once
                self._rejected = key
                if self.on_error is not None:
                    self.on_error(
                        exc
                        if isinstance(exc, CheckpointError)
                        else CheckpointError(f"checkpoint {self.path}: {one_line(exc)}")
                    )
            return self.value
