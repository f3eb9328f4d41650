"""`report.html` of a real finished tiny run, rendered by headless Chromium.

Parsing the HTML would pass with a plot whose base64 is cut or not a PNG; a browser says whether
each image decoded: complete, naturalWidth > 0, and all of its data (a cut PNG still has a
width). The verdict must read as compare.py wrote it, every per-seed value of both arms must be
in the per-seed table, every trial in the trials table, and the tick labels of each log-scaled
hyperparameter axis must not overlap (as rendered: each label's box on the page). The full-page
screenshot is kept at test-artifacts/report.png (git-ignored) and in the test's tmp dir, for a
person to look at.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml
from headless import Browser, chromium_or_skip

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"

IMAGES = """[...document.images].map(i => ({
    alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))"""
# A truncated PNG still shows its top rows and its size (naturalWidth); decoding all of its
# bytes fails, so each image's data is decoded in full as well.
DECODED = """Promise.all([...document.images].map(i => fetch(i.src).then(r => r.blob())
    .then(createImageBitmap).then(b => b.width, e => String(e))))"""
# Each labelled tick of every log-scaled parameter axis (the inline SVG groups `param-<name>`
# whose x axis is log: report.plot_params), as rendered: its text and its box on the page.
LOG_TICK_LABELS = """Object.fromEntries([...document.querySelectorAll('svg g[id^="param-"]')].map(
    g => [g.id.slice(6), [...g.querySelectorAll('g[id^="xtick_"] text')].map(t => {
        const r = t.getBoundingClientRect();
        return {text: t.textContent, left: r.left, right: r.right};
    }).filter(l => l.text)]))"""
TABLES = """[...document.querySelectorAll('table')].map(t => [...t.rows].map(
    r => [...r.cells].map(c => c.innerText.trim())))"""


@pytest.mark.slow
def test_report_renders_verdict_tables_and_every_plot(tiny_run: Path, tmp_path: Path) -> None:
    chromium = chromium_or_skip(tmp_path / "chromium-install.log")
    experiment = yaml.safe_load((tiny_run / "config" / "config.yaml").read_text())["experiment"]
    results = tiny_run / "results" / experiment
    comparison = json.loads((results / "final" / "comparison.json").read_text())
    trials = json.loads((results / "hunt" / "trials.json").read_text())
    plots = sorted((results / "plots").glob("*.png"))
    assert plots, f"no plots in {results / 'plots'}"

    with Browser(chromium) as page:
        page.goto((results / "report.html").as_uri())
        page.wait_for("[...document.images].every(i => i.complete)")
        images = page.evaluate(IMAGES)
        tick_labels = page.evaluate(LOG_TICK_LABELS)
        decoded = page.evaluate(DECODED)
        tables = page.evaluate(TABLES)
        text = page.evaluate("document.body.innerText")
        page.screenshot(tmp_path / "report.png")
        page.screenshot(ARTIFACTS / "report.png")

    assert comparison["verdict_text"] in text
    # The per-hyperparameter plot is inline SVG (its labels measurable below), the others images.
    assert len(images) == len(plots) - 1, f"{len(plots)} plots in plots/, images: {images}"
    broken = [image for image in images if not (image["width"] > 0 and image["height"] > 0)]
    assert not broken, f"images that did not decode: {broken}"
    assert decoded == [image["width"] for image in images], f"decoding each image's data: {decoded}"

    space = json.loads((results / "provenance.json").read_text())["orion"]["space"]
    assert sorted(tick_labels) == sorted(space), tick_labels
    logged = [name for name, prior in space.items() if prior.startswith("loguniform")]
    assert logged, f"no log-scaled hyperparameter in {space}"
    for name in logged:
        labels = sorted(tick_labels[name], key=lambda label: label["left"])
        assert 2 <= len(labels) <= 8, f"{name}: {labels}"
        for left, right in itertools.pairwise(labels):
            assert left["right"] < right["left"], f"{name}: tick labels overlap: {left}, {right}"

    (per_seed,) = [table for table in tables if table and table[0][:1] == ["seed"]]
    header, rows = per_seed[0], {row[0]: row for row in per_seed[1:]}
    assert sorted(rows) == sorted(str(seed) for seed in comparison["seeds"]), per_seed
    for split in ("valid", "test"):
        for arm in ("tuned", "untuned"):
            column = header.index(f"{split} {arm}")
            values = comparison["splits"][split][arm]["values"]
            for seed, value in zip(comparison["seeds"], values, strict=True):
                shown = float(rows[str(seed)][column])
                assert shown == pytest.approx(value, rel=1e-3, abs=1e-6), (split, arm, seed)
    cells = {cell for table in tables for row in table for cell in row}
    for trial in trials:
        assert any(trial["id"][:8] in cell for cell in cells), f"trial {trial['id']} not shown"
