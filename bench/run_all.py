"""Run the benchmarks (``make bench``), then record their figures for docs/results.md.

    .venv/train/bin/python bench/run_all.py                      # everything
    .venv/train/bin/python bench/run_all.py --only search,e2e    # some of them
    .venv/train/bin/python bench/run_all.py --table-only         # only the records, from the JSON
    .venv/train/bin/python bench/run_all.py --smoke              # toy sizes: does it all still run?

Each benchmark is its own process (``bench/bench_<name>.py``) writing
``<results-dir>/<name>.json``; the default corpus is prepared once and shared. A failing
benchmark does not stop the others; the records are rebuilt from whatever JSON exists (each row
says when and under which load it was measured), and the exit status is 1 if any failed.
The full table with each benchmark's details goes to ``<results-dir>/README.md`` (or --readme);
outside --smoke, the summary rows replace their figures in docs/measured.json and
docs/results.md is regenerated, the one committed place for measured numbers. ``--smoke``
writes under bench/results/smoke/ unless --results-dir says otherwise, never into docs/, and
skips the two benchmarks whose minimum sizes are not toy-sized (report_cost, launcher).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import benchlib
import table

from reprohunt import results_page


@dataclass(frozen=True)
class Benchmark:
    name: str
    budget_s: int  # on an idle 2-core machine, default sizes
    needs_corpus: bool = True
    # Timing benchmarks take --repeats; the others count compute or run one workflow per variant.
    takes_repeats: bool = True
    # Scripts written before this harness: fixed result path, their own minimum repeats.
    external_min_repeats: int | None = None
    extra_args: tuple[str, ...] = ()

    @property
    def script(self) -> Path:
        return benchlib.BENCH / f"bench_{self.name}.py"


BENCHMARKS = (
    Benchmark("report_cost", 30, needs_corpus=False, external_min_repeats=3),
    Benchmark(
        "launcher",
        60,
        needs_corpus=False,
        external_min_repeats=5,
        extra_args=("--hunt-trials", "0"),
    ),
    Benchmark("overhead", 120),
    Benchmark("features", 90),
    Benchmark("throughput", 60),
    Benchmark("numerics", 240, takes_repeats=False),
    Benchmark("search", 420, takes_repeats=False),
    Benchmark("search_value", 2700, takes_repeats=False),
    Benchmark("scaling", 900, takes_repeats=False, extra_args=("--default-hunt",)),
    Benchmark("e2e", 600, needs_corpus=False, takes_repeats=False),
)
BY_NAME = {benchmark.name: benchmark for benchmark in BENCHMARKS}
SMOKE_RESULTS = benchlib.DEFAULT_RESULTS / "smoke"

# Runs an external script with its RESULTS path pointed into --results-dir.
EXTERNAL_LOADER = """\
import importlib.util, sys
from pathlib import Path
script, results = sys.argv[1], Path(sys.argv[2])
spec = importlib.util.spec_from_file_location("bench_external", script)
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
module.RESULTS = results
sys.argv = [script, *sys.argv[3:]]
module.main()
"""


def command(benchmark: Benchmark, args: argparse.Namespace, data: Path | None) -> list[str]:
    if benchmark.external_min_repeats is not None:
        repeats = max(args.repeats, benchmark.external_min_repeats)
        script_args = ["--repeats", str(repeats), *benchmark.extra_args]
        if args.results_dir.resolve() == benchlib.DEFAULT_RESULTS.resolve():
            return [sys.executable, str(benchmark.script), *script_args]
        result = args.results_dir / f"{benchmark.name}.json"
        return [sys.executable, "-c", EXTERNAL_LOADER, str(benchmark.script), str(result)] + (
            script_args
        )
    own = ["--results-dir", str(args.results_dir)]
    own += ["--repeats", str(args.repeats)] if benchmark.takes_repeats else []
    own += ["--smoke"] if args.smoke else []
    own += ["--data", str(data)] if data is not None and benchmark.needs_corpus else []
    return [sys.executable, str(benchmark.script), *own, *benchmark.extra_args]


def corpus_size() -> str:
    """The data size the benchmarks ran on, as docs/measured.json records it for each figure."""
    data = benchlib.CONFIG["data"]
    if data["source"] != "synthetic":
        return f"the default config's {data['source']} corpus"
    synthetic = data["synthetic"]
    return (
        f"default synthetic corpus: {synthetic['n_speakers']} speakers x "
        f"{synthetic['utts_per_speaker']} utterances"
    )


def selected(args: argparse.Namespace) -> list[Benchmark]:
    names = [name.strip() for name in args.only.split(",")] if args.only else list(BY_NAME)
    unknown = [name for name in names if name not in BY_NAME]
    if unknown:
        raise SystemExit(f"--only: unknown benchmark(s) {unknown}; choose from {list(BY_NAME)}")
    chosen = [BY_NAME[name] for name in names]
    if args.smoke:
        chosen = [b for b in chosen if b.external_min_repeats is None]
    return chosen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BY_NAME)}")
    parser.add_argument("--repeats", type=int, help="samples per variant (default 3; smoke 1)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes, 1 repeat, own results")
    parser.add_argument("--results-dir", type=Path, help="default bench/results (smoke: …/smoke)")
    parser.add_argument("--readme", type=Path, help="the full table (default: in results)")
    parser.add_argument("--table-only", action="store_true", help="only rebuild table and records")
    args = parser.parse_args()
    args.repeats = args.repeats or (1 if args.smoke else 3)
    if args.repeats < 3 and not args.smoke:
        parser.error("--repeats must be at least 3 (medians), or use --smoke")
    args.results_dir = args.results_dir or (
        SMOKE_RESULTS if args.smoke else benchlib.DEFAULT_RESULTS
    )
    args.results_dir.mkdir(parents=True, exist_ok=True)
    readme = args.readme or args.results_dir / "README.md"

    failed: list[str] = []
    if not args.table_only:
        benchmarks = selected(args)
        corpus_args = argparse.Namespace(data=None, smoke=args.smoke, results_dir=args.results_dir)
        data = benchlib.corpus(corpus_args) if any(b.needs_corpus for b in benchmarks) else None
        record_path = args.results_dir / "run_all.json"
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        runs = record.setdefault("benchmarks", {})
        started, began_at = time.perf_counter(), time.strftime("%Y-%m-%d %H:%M:%S")
        for benchmark in benchmarks:
            print(f"== {benchmark.name} (budget ~{benchmark.budget_s} s idle)", flush=True)
            began = time.perf_counter()
            code = subprocess.run(command(benchmark, args, data), cwd=benchlib.ROOT).returncode
            elapsed = time.perf_counter() - began
            runs[benchmark.name] = {
                "exit": code,
                "elapsed_s": round(elapsed, 1),
                "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
            }
            print(f"== {benchmark.name}: exit {code} after {elapsed:.0f} s", flush=True)
            if code != 0:
                failed.append(benchmark.name)
        elapsed = round(time.perf_counter() - started, 1)
        if not args.only:
            record["last_full_run"] = {"started": began_at, "elapsed_s": elapsed, "failed": failed}
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"== all: {elapsed:.0f} s; failed: {failed or 'none'}", flush=True)

    table.update_readme(readme, table.render(args.results_dir))
    print(f"table written to {readme}")
    if not args.smoke:
        measured = table.figures(args.results_dir, corpus_size())
        results_page.save_figures(results_page.replaced(results_page.load_figures(), measured))
        results_page.write()
        print(f"{len(measured)} figure(s) recorded in docs/measured.json and docs/results.md")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
