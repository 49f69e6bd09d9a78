"""A habit ruff has no rule for: no comma-chained side effects.

``ax.set_xlabel("x"), ax.set_ylabel("y")`` as a statement builds and drops a tuple to save a line;
each call gets its own statement (or one call that takes both, like ``ax.set(xlabel=..., ylabel=...)``).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("shared/src", "validator/src", "functions", "bench", "tests")


def comma_chains(source: str) -> list[int]:
    """Line numbers of statements that are a bare tuple with a call in it."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Tuple)
        and any(isinstance(e, ast.Call) for e in node.value.elts)
    ]


def test_a_comma_chain_is_found_and_a_tuple_value_is_not():
    source = 'ax.set_xlabel("x"), ax.set_ylabel("y")\nsize = ax.get_w(), ax.get_h()\nreturn_value = (1, 2)\n'
    assert comma_chains(source) == [1]


def test_no_comma_chained_side_effects_in_the_repository():
    found = [
        f"{path.relative_to(REPO)}:{line}"
        for folder in SOURCES
        for path in sorted((REPO / folder).rglob("*.py"))
        for line in comma_chains(path.read_text(encoding="utf-8"))
    ]
    assert found == []
