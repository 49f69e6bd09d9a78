"""Access tokens as the commands read them: a token travels in an HTTP header, so it is one line of
printable ASCII without spaces; anything else is refused at start with one line that names where
the token came from (never the token itself)."""

from __future__ import annotations

from pathlib import Path

from ropewatch_core.errors import InputError


def token_problem(token: str | None, where: str) -> str | None:
    """Why ``token`` (from ``where``) cannot be sent in a header, or None (also for no token)."""
    if token is None or (token.isascii() and token.isprintable() and " " not in token):
        return None
    return f"{where}: the token must be printable ASCII without spaces (HTTP headers carry it)"


def read_token_file(path: Path) -> str:
    """The first line of ``path``, without surrounding blanks; the rest of the file is ignored."""
    where = f"token file {path}"
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise InputError(f"cannot read {where}: {exc.strerror}") from None
    token = lines[0].decode("utf-8", "replace").strip() if lines else ""
    if not token:
        raise InputError(f"{where} is empty (the token is its first line)")
    problem = token_problem(token, where)
    if problem:
        raise InputError(problem)
    return token
