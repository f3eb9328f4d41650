"""Config errors as a user can act on them: the file, the key, what is wrong and the fix.

Why not Snakemake's own `validate` message: it prints jsonschema's raw `ValidationError`, with
`On instance['hunt']['max_trials']` for a key, neither the config file nor a fix, and for a
recipe's `prepare.schema.yaml` not even that the key lies under `data:`. Here every problem of
the config is listed at once, each as `KEY: what is wrong; fix: what to write`, followed by the
key's description from the schema. Runs in the workflow env (jsonschema comes with Snakemake).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ConfigError(Exception):
    """The config breaks a schema; the message names the file, every bad key and its fix."""


@dataclass(frozen=True)
class Problem:
    """One schema violation, worded for the user."""

    key: str
    what: str
    fix: str
    meaning: str

    def __str__(self) -> str:
        about = f" ({self.key}: {self.meaning})" if self.meaning else ""
        return f"{self.key}: {self.what}; fix: {self.fix}{about}"


def dotted(prefix: str, path: Sequence[Any]) -> str:
    """`hunt.max_trials`, `final.seeds[1]`: a config key as the user writes it."""
    key = prefix
    for part in path:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def meaning_at(schema: Mapping[str, Any], path: Sequence[Any]) -> str:
    """The description of the deepest schema node along `path` that has one (a search-space
    entry has none of its own: its parent's says what a prior looks like)."""
    node, found = schema, ""
    for part in path:
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(part) or node.get("additionalProperties") or {}
        if not isinstance(node, Mapping):
            break
        found = " ".join(str(node.get("description", "")).split()) or found
    return found


def unknown_keys(error: Any) -> list[str]:
    """The keys an `additionalProperties: false` object refused."""
    known = set(error.schema.get("properties", {}))
    return sorted(key for key in error.instance if key not in known)


def examples(node: Mapping[str, Any]) -> str:
    """`write it like A or B`, from the schema node's `examples`, if it lists any."""
    found = node.get("examples") or []
    return "write it like " + " or ".join(str(example) for example in found) if found else ""


def shown(path: Path) -> str:
    """`path` relative to the working folder when it lies inside it (the repository root)."""
    relative = os.path.relpath(path.resolve())
    return str(path) if relative.startswith("..") else relative


def fix_for(error: Any) -> str:
    """What to write instead, by the kind of rule the value broke."""
    value = error.validator_value
    fixes = {
        "minimum": lambda: f"set it to {value} or more",
        "exclusiveMinimum": lambda: f"set it to more than {value}",
        "maximum": lambda: f"set it to {value} or less",
        "exclusiveMaximum": lambda: f"set it to less than {value}",
        "minItems": lambda: f"list at least {value} values",
        "maxItems": lambda: f"list at most {value} values",
        "minProperties": lambda: f"give it at least {value} entries",
        "uniqueItems": lambda: "list each value once",
        "type": lambda: f"give it a value of type {value}",
        "enum": lambda: "use one of " + ", ".join(repr(option) for option in value),
        "const": lambda: f"set it to {value!r}",
        "pattern": lambda: examples(error.schema) or f"write it so that it matches {value}",
    }
    return fixes.get(error.validator, lambda: "see its description")()


def problems_of(error: Any, schema: Mapping[str, Any], prefix: str) -> list[Problem]:
    """The user's view of one jsonschema error (an unknown-key error may name several keys)."""
    path = list(error.absolute_path)
    if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
        known = sorted(error.schema.get("properties", {}))
        found = []
        for key in unknown_keys(error):
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            fix = f"{hint}remove it or use a known key ({', '.join(known)})"
            found.append(Problem(dotted(prefix, [*path, key]), "unknown key", fix, ""))
        return found
    if error.validator == "required":
        missing = [key for key in error.validator_value if key not in error.instance]
        return [
            Problem(dotted(prefix, [*path, k]), "missing", "add it", meaning_at(schema, [*path, k]))
            for k in missing
        ]
    return [Problem(dotted(prefix, path), error.message, fix_for(error), meaning_at(schema, path))]


def check(
    instance: Mapping[str, Any],
    schema_file: Path,
    config_file: str,
    prefix: str = "",
    keys_doc: str | None = None,
) -> None:
    """Raise ConfigError listing every violation of `schema_file` in `instance` (the config, or
    its `prefix` section) as found in `config_file`; nothing when it conforms. `keys_doc`: the
    page that lists every key, when there is one beside the schema."""
    from jsonschema import Draft202012Validator

    schema = yaml.safe_load(schema_file.read_text())
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: [str(p) for p in e.path])
    problems = [problem for error in errors for problem in problems_of(error, schema, prefix)]
    if problems:
        listed = "\n  ".join(str(problem) for problem in problems)
        doc = f"\nEvery key, its type and default: {keys_doc}" if keys_doc else ""
        raise ConfigError(
            f"invalid config in {config_file} (checked against {shown(schema_file)}):\n"
            f"  {listed}{doc}"
        )
