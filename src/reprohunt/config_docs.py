"""config/README.md, every config key with what it does and its default, made from the schema.

Why generated: the schema (workflow/schemas/config.schema.yaml) is what Snakemake validates, so
its descriptions and defaults are the truth; a hand-kept table drifts as soon as a key is added.
`python -m reprohunt.config_docs` rewrites the file; `--check` exits 1 when it is out of date
(tests/test_config_docs.py runs it), naming the command that fixes it. Both refuse a schema key
without a description, naming it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from hpopt.files import write_text_atomically

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
README = REPO / "config" / "README.md"
COMMAND = ".venv/train/bin/python -m reprohunt.config_docs"

HEADER = """# Configuration keys

<!-- Generated from workflow/schemas/config.schema.yaml by `{command}`: do not edit by hand;
     edit the schema's descriptions and defaults, then rerun that command. -->

`config/config.yaml` is the default config; `snakemake --configfile FILE` replaces it. Snakemake
validates either against `workflow/schemas/config.schema.yaml` before any job: {description}

A key without a default is required when its group is present (**required**), or else optional
and unset (—). Types and limits are the schema's.

| key | type | default | what it does |
|---|---|---|---|
"""


def cell(text: str) -> str:
    """Markdown table cell: one line, pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def type_of(node: dict[str, Any]) -> str:
    """The schema's type with its limits, as a reader needs them."""
    if "enum" in node:
        return "one of " + ", ".join(f"`{value}`" for value in node["enum"])
    if "const" in node:
        return f"`{node['const']}`"
    if "oneOf" in node:
        return " or ".join(type_of(option) for option in node["oneOf"])
    kind = node.get("type", "any")
    text = " or ".join(kind) if isinstance(kind, list) else kind
    if kind == "array" and "items" in node:
        text = f"array of {type_of(node['items'])}"
    limits = [
        f"{label} {node[key]}"
        for key, label in (
            ("minimum", "≥"),
            ("maximum", "≤"),
            ("minItems", "at least"),
            ("minProperties", "at least"),
            ("maxProperties", "at most"),
        )
        if key in node
    ]
    if "pattern" in node:
        limits.append(f"matching `{node['pattern']}`")
    return text + (f" ({', '.join(limits)})" if limits else "")


def default_of(node: dict[str, Any], required: bool) -> str:
    if "default" in node:
        return f"`{json.dumps(node['default'])}`"
    return "**required**" if required else "—"


def rows(node: dict[str, Any], prefix: str = "") -> Iterator[str]:
    """One table row per key, depth first, in the schema's order."""
    required = set(node.get("required", []))
    for key, child in node.get("properties", {}).items():
        name = f"{prefix}{key}"
        yield (
            f"| `{name}` | {cell(type_of(child))} | {cell(default_of(child, key in required))} "
            f"| {cell(child.get('description', ''))} |"
        )
        yield from rows(child, f"{name}.")
        if isinstance(child.get("additionalProperties"), dict) and "properties" not in child:
            value = child["additionalProperties"]
            yield (
                f"| `{name}.<key>` | {cell(type_of(value))} | — "
                f"| {cell(value.get('description', 'any key, see above'))} |"
            )


def undescribed(node: dict[str, Any], prefix: str = "") -> list[str]:
    """Keys the schema gives no description: the table would say nothing about them."""
    missing = []
    for key, child in node.get("properties", {}).items():
        if not child.get("description"):
            missing.append(f"{prefix}{key}")
        missing += undescribed(child, f"{prefix}{key}.")
    return missing


def render(schema: dict[str, Any]) -> str:
    header = HEADER.format(command=COMMAND, description=cell(schema.get("description", "")))
    return header + "\n".join(rows(schema)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", type=Path, default=SCHEMA)
    parser.add_argument("--out", type=Path, default=README)
    parser.add_argument("--check", action="store_true", help="only say whether --out is current")
    args = parser.parse_args(argv)
    schema = yaml.safe_load(args.schema.read_text())
    if missing := undescribed(schema):
        print(
            f"{args.schema}: give these keys a description: {', '.join(missing)}", file=sys.stderr
        )
        return 1
    text = render(schema)
    if args.check:
        if args.out.is_file() and args.out.read_text() == text:
            return 0
        print(f"{args.out} is out of date with {args.schema}: run `{COMMAND}`", file=sys.stderr)
        return 1
    write_text_atomically(args.out, text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
