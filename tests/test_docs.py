"""The documentation: the site builds strictly, strictness catches a broken link, and the one page
of measured numbers is what its committed records give.

Why: a docs page or a figure that nobody rebuilds goes stale without a sound; these tests make
the staleness a failure of `make test`.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from reprohunt import results_page

REPO = Path(__file__).resolve().parents[1]
MKDOCS = REPO / ".venv" / "workflow" / "bin" / "mkdocs"


def build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """`mkdocs build --strict` of the mkdocs.yml in `root` (never -q: it hides the warnings that
    strict mode counts)."""
    if not MKDOCS.is_file():
        pytest.skip(f"{MKDOCS} is missing: run make setup")
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--site-dir", str(site)],
        cwd=root,
        capture_output=True,
        text=True,
    )


def test_the_site_builds_strictly(tmp_path: Path) -> None:
    run = build(REPO, tmp_path / "site")
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "site" / "config-reference" / "index.html").is_file()


def test_a_broken_link_between_pages_fails_the_build(tmp_path: Path) -> None:
    shutil.copy(REPO / "mkdocs.yml", tmp_path)
    shutil.copytree(REPO / "docs", tmp_path / "docs", symlinks=False)
    with open(tmp_path / "docs" / "limits.md", "a") as page:
        page.write("\nSee [a page that does not exist](no-such-page.md).\n")
    run = build(tmp_path, tmp_path / "site")
    assert run.returncode != 0
    assert "no-such-page.md" in run.stderr


def test_the_results_page_is_what_its_records_give() -> None:
    assert results_page.PAGE.read_text() == results_page.render(), (
        "docs/results.md is stale: run make results-page"
    )


def test_a_remeasured_figure_replaces_the_one_with_its_key() -> None:
    figures = results_page.load_figures()
    first = figures[0]
    again = results_page.Figure(**{**first.__dict__, "value": first.value + 1})
    merged = results_page.replaced(figures, [again])
    assert len(merged) == len(figures) and merged[0] == again
    assert len({figure.key for figure in figures}) == len(figures)


def test_the_readme_stays_short() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 200
