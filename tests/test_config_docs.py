"""config/README.md must be what the schema generates now (`python -m reprohunt.config_docs`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from reprohunt import config_docs

REPO = Path(__file__).resolve().parents[1]


def check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reprohunt.config_docs", "--check", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )


def test_config_readme_is_current_with_the_schema() -> None:
    run = check()
    assert run.returncode == 0, run.stderr


def test_every_key_of_the_schema_has_a_row_with_its_default() -> None:
    schema = yaml.safe_load(config_docs.SCHEMA.read_text())
    text = config_docs.README.read_text()
    assert "| `final.seeds` |" in text and "`[1987, 1988, 1989, 1990, 1991]`" in text
    for key in schema["properties"]:
        assert f"| `{key}` |" in text, key


def test_a_new_schema_key_makes_the_check_fail(tmp_path: Path) -> None:
    schema = yaml.safe_load(config_docs.SCHEMA.read_text())
    schema["properties"]["extra"] = {"type": "integer", "default": 3, "description": "new"}
    changed = tmp_path / "schema.yaml"
    changed.write_text(yaml.safe_dump(schema, sort_keys=False))
    run = check("--schema", str(changed))
    assert run.returncode == 1
    assert "out of date" in run.stderr and config_docs.COMMAND in run.stderr


def test_a_key_without_description_is_named(tmp_path: Path) -> None:
    schema = yaml.safe_load(config_docs.SCHEMA.read_text())
    schema["properties"]["hunt"]["properties"]["extra"] = {"type": "integer"}
    changed = tmp_path / "schema.yaml"
    changed.write_text(yaml.safe_dump(schema, sort_keys=False))
    run = check("--schema", str(changed), "--out", str(tmp_path / "README.md"))
    assert run.returncode == 1
    assert "hunt.extra" in run.stderr
