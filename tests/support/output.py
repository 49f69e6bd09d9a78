"""What a command printed, as a person reads it."""

from __future__ import annotations


def stderr_line(capsys) -> str:
    """The one human line on stderr (no traceback); the JSON log events beside it are for collectors."""
    err = capsys.readouterr().err
    human = [line for line in err.strip().splitlines() if not line.startswith('{"')]
    assert len(human) == 1 and "Traceback" not in err, human
    return human[0]
