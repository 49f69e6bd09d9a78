"""mkdocs hook: generate the reference pages from the code, so they cannot drift from it.

A page holds a marker line and the hook replaces it at build time:

* ``<!-- generated: cli -->``: every ``ropewatch`` subcommand's ``--help``, from the argparse tree;
* ``<!-- generated: schema PATH -->``: a table per object of the JSON Schema at PATH (relative to
  the repository root), from the committed schema file the tests keep equal to its pydantic model.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(r"^<!-- generated: (?P<kind>cli|schema)(?: (?P<arg>\S+))? -->$", re.MULTILINE)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return MARKER.sub(lambda m: _generate(m["kind"], m["arg"]), markdown)


def _generate(kind: str, arg: str | None) -> str:
    if kind == "cli":
        return cli_reference()
    if arg is None:
        raise ValueError("a schema marker needs a path")
    return schema_reference(json.loads((ROOT / arg).read_text()))


def cli_reference() -> str:
    os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal; a fixed width keeps pages stable
    from ropewatch_validator.cli.main import build_parser

    parser = build_parser()
    parts = ["## ropewatch", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in _subcommands(parser):
        parts += [f"## ropewatch {name}", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> list[tuple[str, Any]]:
    """Every (name, parser) below ``parser``, depth first; argparse has no public walk of its tree."""
    found: list[tuple[str, Any]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix}{name}"
                found.append((full, sub))
                found += _subcommands(sub, f"{full} ")
    return found


def schema_reference(schema: dict[str, Any]) -> str:
    defs = schema.get("$defs", {})
    parts = [_object_table(schema.get("title", "root"), schema)]
    parts += [_object_table(name, body) for name, body in sorted(defs.items())]
    return "\n".join(parts)


def _object_table(name: str, body: dict[str, Any]) -> str:
    lines = [f"### `{name}`", ""]
    if body.get("description"):
        lines += [" ".join(body["description"].split()), ""]
    props = body.get("properties")
    if not props:
        if "enum" in body:
            lines += ["One of: " + ", ".join(f"`{v}`" for v in body["enum"]), ""]
        return "\n".join(lines)
    required = set(body.get("required", []))
    lines += ["| field | type | required | description |", "|---|---|---|---|"]
    for field, spec in props.items():
        text = " ".join(str(spec.get("description", "")).split()).replace("|", "\\|")
        lines.append(f"| `{field}` | {_type(spec)} | {'yes' if field in required else ''} | {text} |")
    return "\n".join([*lines, ""])


def _type(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        ref = spec["$ref"].rsplit("/", 1)[-1]
        return f"[{ref}](#{ref.lower()})"
    if "anyOf" in spec:
        return " or ".join(_type(s) for s in spec["anyOf"])
    if "allOf" in spec:
        return " and ".join(_type(s) for s in spec["allOf"])
    kind = spec.get("type", "any")
    if kind == "array":
        return f"array of {_type(spec.get('items', {}))}"
    if kind == "object" and "additionalProperties" in spec and isinstance(spec["additionalProperties"], dict):
        return f"map to {_type(spec['additionalProperties'])}"
    if "enum" in spec:
        return " \\| ".join(f"`{v}`" for v in spec["enum"])
    if "const" in spec:
        return f"`{spec['const']}`"
    return str(kind)
