"""`results/<exp>/report.html`: one self-contained page a reviewer can open anywhere.

Best params and objective, final test metrics, whether tuning helped (the verdict of
final/comparison.json, a tuned-against-untuned plot of mean ± std with each seed's run, and the
per-seed table), a best-so-far (regret) plot and one parameter-vs-objective plot per searched
hyperparameter (PNG, matplotlib, embedded as base64 so the page has no external files), the
table of every trial, and the provenance summary. The PNGs are also written to `plots/` for
`snakemake --report`.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import html
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

from hpopt.files import write_text_atomically
from reprohunt import numerics
from reprohunt.compare import ARMS, TUNED, UNTUNED
from reprohunt.records import Best, Comparison, Provenance, Replay, TrialRecord, load_trials
from reprohunt.result import load as load_result

STYLE = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:90%}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}
th{background:#f2f2f2} code{background:#f6f6f6;padding:1px 4px}
img,svg{max-width:100%;height:auto} .best{background:#e8f5e9}
"""

# The per-hyperparameter plot is inline SVG, so its description is an attribute, not an alt.
PARAMS_ALT = "objective against each hyperparameter"


def completed(trials: list[TrialRecord]) -> list[tuple[TrialRecord, float]]:
    """The completed trials with their objective, in submission order."""
    return [(t, t.objective) for t in trials if t.status == "completed" and t.objective is not None]


def plot_regret(trials: list[TrialRecord], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = completed(trials)
    objectives = [objective for _, objective in done]
    best_so_far = [min(objectives[: i + 1]) for i in range(len(objectives))]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(range(1, len(done) + 1), objectives, "o", alpha=0.6, label="trial objective")
    axis.step(range(1, len(done) + 1), best_so_far, where="post", label="best so far")
    axis.set_xlabel("completed trial (in submission order)")
    axis.set_ylabel("validation objective")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def log_ticks(low: float, high: float) -> tuple[float, ...]:
    """Where a log axis from `low` to `high` gets its labelled ticks: 1-2-5 per decade over at
    most two decades, else decades only, so that no two labels run into each other."""
    return (1.0, 2.0, 5.0) if math.log10(high / low) <= 2 else (1.0,)


def snapped(value: float, up: bool) -> float:
    """The nearest 1-2-5 value (1, 2, 5, 10, 20 … times a power of 10) at or below `value`, or
    at or above it with `up`."""
    scale = 10.0 ** math.floor(math.log10(value))
    steps = [step * scale for step in (1.0, 2.0, 5.0, 10.0)]
    return min(s for s in steps if s >= value) if up else max(s for s in steps if s <= value)


def short_label(value: float, _position: object = None) -> str:
    """A log axis's tick label as `3e-4`: matplotlib's default (3×10⁻⁴ with minor labels) ran
    the labels of a narrow range into one unreadable line."""
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def plot_params(trials: list[TrialRecord], space: dict[str, str], png: Path) -> str:
    """One objective-against-value plot per hyperparameter, written to `png`; returns the same
    figure as inline SVG, its text as text, each plot's group named `param-<name>`, so that
    the labels stay sharp at any zoom and a browser can measure them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    done = completed(trials)
    names = sorted(space)
    columns = min(len(names), 3)
    rows = math.ceil(len(names) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for axis, name in zip(axes.flat, names, strict=False):
        values = [t.params[name] for t, _ in done]
        axis.plot(values, [objective for _, objective in done], "o", alpha=0.7)
        axis.set_xlabel(name)
        axis.set_ylabel("objective")
        axis.set_gid(f"param-{name}")
        if space[name].startswith("loguniform"):
            axis.set_xscale("log")
            # Out to the 1-2-5 values around the trials: on a narrower axis (trials close
            # together) matplotlib put its own ticks between them, and two read `5e-3`.
            low, high = axis.get_xlim()
            low, high = snapped(low, up=False), snapped(high, up=True)
            axis.set_xlim(low, high)
            axis.xaxis.set_major_locator(LogLocator(base=10, subs=log_ticks(low, high)))
            axis.xaxis.set_major_formatter(FuncFormatter(short_label))
            axis.xaxis.set_minor_formatter(NullFormatter())
    for axis in list(axes.flat)[len(names) :]:
        axis.axis("off")
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    svg = io.StringIO()
    # Text as <text> elements; fixed ids and no date, so an equal run gives an equal page.
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "reprohunt"}):
        figure.savefig(svg, format="svg", metadata={"Date": None})
    plt.close(figure)
    text = svg.getvalue()
    return text[text.index("<svg") :]


def plot_comparison(comparison: Comparison, path: Path) -> None:
    """Per split, each arm's mean ± std (error bar) and each seed's run (points)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    splits = comparison.splits
    figure, axes = plt.subplots(1, len(splits), figsize=(4 * len(splits), 3.5), squeeze=False)
    for axis, (split, arms) in zip(axes.flat, splits.items(), strict=True):
        for position, arm in enumerate(ARMS):
            summary = arms.arm(arm)
            values = summary.values
            axis.errorbar(position, summary.mean, yerr=summary.std, fmt="s", capsize=8, ms=8)
            axis.plot([position + 0.15] * len(values), values, "o", alpha=0.6, color="gray")
        axis.set_xticks(range(len(ARMS)), ARMS)
        axis.set_xlim(-0.5, len(ARMS) - 0.5)
        axis.set_title(f"{split} {comparison.metric} ({len(comparison.seeds)} seeds)")
        axis.set_ylabel(comparison.metric)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def comparison_tables(comparison: Comparison) -> str:
    """The summary per split, then each seed's tuned and untuned values and their difference."""
    splits = comparison.splits
    summary_rows = [
        [
            split,
            f"{arms.tuned.mean:.4g} ± {arms.tuned.std:.2g}",
            f"{arms.untuned.mean:.4g} ± {arms.untuned.std:.2g}",
            arms.difference.mean,
            "[{:+.4g}, {:+.4g}]".format(*arms.difference.ci),
            arms.ratio,
        ]
        for split, arms in splits.items()
    ]
    seed_rows = [
        [
            seed,
            *(
                value
                for arms in splits.values()
                for value in (
                    arms.tuned.values[index],
                    arms.untuned.values[index],
                    arms.difference.values[index],
                )
            ),
        ]
        for index, seed in enumerate(comparison.seeds)
    ]
    confidence = f"{comparison.confidence:.0%} CI"
    seed_header = [
        f"{split} {column}" for split in splits for column in (TUNED, UNTUNED, "difference")
    ]
    return table(
        ["split", "tuned mean ± std", "untuned mean ± std", "difference mean", confidence, "ratio"],
        summary_rows,
    ) + table(["seed", *seed_header], seed_rows)


def table(header: list[str], rows: list[list[Any]], highlight: int | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        f"<tr{' class=best' if index == highlight else ''}>"
        + "".join(f"<td>{html.escape(_fmt(cell))}</td>" for cell in row)
        + "</tr>"
        for index, row in enumerate(rows)
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def seeds_text(trial_seed: int, final_seeds: list[int]) -> str:
    """Why the final stage's seeds leave out the trials' seed, or what it means that they don't."""
    if trial_seed not in final_seeds:
        return (
            f"The hunt's trials trained at seed {trial_seed}, which the final seeds leave out: "
            "there the tuned run would be the very trial that won the selection, the best of "
            "many noisy results, and would flatter the tuned arm (the winner's curse)."
        )
    return (
        f"<b>The final seeds include {trial_seed}, the seed the hunt's trials trained at</b> "
        "(final.allow_trial_seed): the tuned run at that seed is the very trial that won the "
        "selection, so the tuned arm is flattered there (the winner's curse)."
    )


def image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def replay_text(replay: Replay | None) -> str:
    """Whether a re-run replays this hunt's trial sequence, and why not."""
    if replay is None:
        return "Not recorded (the result predates the replay check)."
    if replay.intact:
        return (
            "Seeded, proposed independently of when trials finished (one at a time, or the "
            "optuna algorithm's batch), nothing retried: a re-run replays this trial sequence."
        )
    if not replay.expected:
        return (
            "Unseeded, or several trials at once with an algorithm that proposes as workers "
            "free up: a re-run finds its own trial sequence."
        )
    departures = html.escape("; ".join(replay.departures))
    return f"<b>The trial sequence departed from the seeded one</b> ({departures})."


def numerics_rows(facts: dict[str, Any] | None) -> list[list[str]]:
    """The numerics profile in use, as fact rows (none for a record that predates it)."""
    if facts is None:
        return [["numerics", "not recorded (the result predates numerics profiles)"]]
    cpu = facts["cpu"]
    return [
        ["numerics", numerics.describe(facts)],
        ["CPU", f"{cpu['vendor']} {cpu['model']}; flags: {' '.join(cpu['flags'])}"],
        [
            "numerics variables",
            " ".join(f"{name}={value}" for name, value in facts["environment"].items())
            or "none (native: each library picks its path for this CPU)",
        ],
        ["MKL / oneDNN / OpenBLAS", f"{facts['mkl']} / {facts['onednn']} / {facts['openblas']}"],
        ["GPUs (kernels outside the profile)", ", ".join(facts["gpus"]) or "none"],
    ]


@dataclasses.dataclass(frozen=True)
class ReportFiles:
    """What the report reads (the records) and writes (the page and its three plots)."""

    trials: Path
    best: Path
    metrics: Path
    comparison: Path
    provenance: Path
    out: Path
    regret: Path
    params: Path
    comparison_plot: Path


def write_report(files: ReportFiles) -> None:
    """Draw the plots, then write the page that embeds them."""
    files.regret.parent.mkdir(parents=True, exist_ok=True)
    trials = load_trials(files.trials)
    space = Provenance.load(files.provenance).orion.space
    plot_regret(trials, files.regret)
    params_svg = plot_params(trials, space, files.params)
    plot_comparison(Comparison.load(files.comparison), files.comparison_plot)
    write_text_atomically(files.out, render(files, params_svg))


def render(files: ReportFiles, params_svg: str) -> str:
    """The page, from the records and the plots of `files` (`params_svg`: plot_params')."""
    trials = load_trials(files.trials)
    best = Best.load(files.best)
    result = load_result(files.metrics)
    comparison = Comparison.load(files.comparison)
    provenance = Provenance.load(files.provenance)
    space = provenance.orion.space
    names = sorted(space)
    trial_rows = [
        [t.id[:12], t.status, t.objective, *(t.params.get(n) for n in names), t.duration_s]
        for t in trials
    ]
    best_index = next((i for i, t in enumerate(trials) if t.id == best.trial_id), None)
    metric_names = sorted({name for values in result.metrics.values() for name in values})
    metric_rows = [
        [split, *(values.get(name) for name in metric_names)]
        for split, values in result.metrics.items()
    ]
    objective = ".".join(result.objective)
    git, hardware = provenance.git, provenance.hardware
    facts = [
        ["git commit", f"{git.get('commit')} (dirty: {git.get('dirty')})"],
        *[
            [f"{name} env", f"{env.lock} sha256 {env.lock_sha256_now}"]
            for name, env in provenance.environments.items()
        ],
        ["python / torch / CUDA", f"{hardware.python} / {hardware.torch} / {hardware.torch_cuda}"],
        [
            "platform",
            f"{hardware.platform}, {hardware.cpu_count} CPUs, GPUs: "
            f"{', '.join(hardware.gpus) or 'none'}",
        ],
        [
            "recipe",
            f"{provenance.recipe['dir']} code sha256 {provenance.recipe['code_sha256']}",
        ],
        *numerics_rows(provenance.numerics),
        ["data (sha256 of hashes.json)", provenance.data_hashes_sha256],
        ["seeds", json.dumps(provenance.document()["seeds"])],
        ["Orion storage", json.dumps(provenance.orion.storage)],
    ]
    cost_rows = [[rule, c.wall_s, c.max_rss_mib] for rule, c in provenance.rule_costs.items()]
    title = f"reprohunt: {html.escape(best.experiment)}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title><style>{STYLE}</style></head>
<body>
<h1>{title}</h1>
<p>Orion experiment <code>{html.escape(best.experiment)}</code> v{best.version}:
{best.trials_completed} completed trials. Selection: {html.escape(best.selection_rule)}.</p>
<h2>Best trial</h2>
{
        table(
            ["trial", "objective", *names],
            [[best.trial_id, best.objective, *(best.params.get(n) for n in names)]],
        )
    }
<h2>Final model (retrained with the best params, seed {comparison.seeds[0]})</h2>
<p>Objective: <code>{html.escape(objective)}</code>, {result.objective_value}.</p>
{table(["split", *metric_names], metric_rows)}
<h2>Did tuning help?</h2>
<p>The best params (tuned) and <code>train.yaml</code> as shipped (untuned), each retrained at
the seeds {html.escape(", ".join(map(str, comparison.seeds)))} on the same data; differences
are tuned − untuned of <code>{html.escape(comparison.metric)}</code> (minimised), paired by
seed, with a Student-t interval. The verdict is about the {comparison.verdict_split} split.
{seeds_text(provenance.seeds.recipe, comparison.seeds)}</p>
<p><b>{html.escape(comparison.verdict_text)}</b></p>
{image(files.comparison_plot, "tuned against untuned, mean and std with each seed's run")}
{comparison_tables(comparison)}
<h2>Search</h2>
<p>{replay_text(provenance.orion.replay)}</p>
{image(files.regret, "best objective so far")}
{params_svg.replace("<svg ", f'<svg role="img" aria-label="{PARAMS_ALT}" ', 1)}
<h3>Search space</h3>
{table(["hyperparameter", "prior"], [[n, space[n]] for n in names])}
<h3>All trials</h3>
{table(["trial", "status", "objective", *names, "duration (s)"], trial_rows, best_index)}
<h2>Provenance</h2>
{table(["what", "value"], facts)}
<h3>Time and memory per step</h3>
{table(["rule", "wall (s)", "peak RSS (MiB)"], cost_rows)}
<p>Full record: <code>provenance.json</code>. Re-check this result with <code>make audit</code>.</p>
</body></html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("trials", "best", "metrics", "comparison", "provenance"):
        parser.add_argument(f"--{name}", type=Path, required=True, help=f"{name} file to read")
    for name in ("out", "regret", "params", "comparison-plot"):
        parser.add_argument(f"--{name}", type=Path, required=True, help=f"{name} file to write")
    args = parser.parse_args(argv)
    write_report(ReportFiles(**vars(args)))
    print(f"report written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
