"""`python speechbrain_run.py --result NAME SCRIPT TRAIN_YAML [ARGS…]`: run a SpeechBrain recipe
as it is, and write its result file.

A SpeechBrain recipe reports what it measured in two places, neither of them a file the
workflow can read: its train logger (`train_log.txt`, numbers rounded to three digits) and
SpeechBrain's `hpopt` (the objective, for Orion). This runner starts the recipe's script as
`python SCRIPT …` would (as `__main__`, its folder first on `sys.path`), after three hooks:

- every `log_stats` call of SpeechBrain's train loggers is recorded at full precision;
- `--hpopt_mode orion` reports through hpopt's Orion reporter, which writes Orion's result file
  itself, refuses a missing or NaN objective, and never imports `orion.client` inside a trial;
- torch uses `--threads` CPU threads (the config's recipe.speechbrain.num_threads, default 1):
  SpeechBrain recipes leave the count to torch, which takes every core, and a float sum's
  last bits depend on how many threads share it, so a retrain and its audit would differ;
- with `--numerics portable`, the float32 ops whose last bit depends on the CPU's vendor are
  computed from IEEE-exact operations (reprohunt.portable_ops), as the default recipe does itself;
- directory listings come back sorted while the recipe runs: SpeechBrain builds file lists
  (the noise set's CSV among them) in `os.listdir` order, which differs between file systems,
  and the recipe then draws from those lists by index.

When the script ends without error and outside hpopt mode, `<output_folder>/NAME` is written
from the records (reprohunt.speechbrain_result). Outside the workflow it runs any SpeechBrain
recipe by hand the same way. It is a script, not a module, so that the warm launcher, which
starts scripts, starts it too.
"""

from __future__ import annotations

import argparse
import contextlib
import runpy
import sys
from pathlib import Path


def portable_math(portable: bool) -> contextlib.AbstractContextManager[object]:
    """reprohunt.portable_ops's mode under the portable profile, nothing under native."""
    if not portable:
        return contextlib.nullcontext()
    from reprohunt.portable_ops import PortableMath

    return PortableMath()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="speechbrain_run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--result", required=True, help="result file name in the output folder")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1)")
    parser.add_argument(
        "--numerics", choices=("portable", "native"), default="portable", help="(portable)"
    )
    parser.add_argument("script", type=Path, help="the recipe's training script")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="its arguments")
    options = parser.parse_args(argv)
    script = options.script.resolve()
    # What `python SCRIPT` gives the script: its own folder first on the path (the runner's
    # folder, which the interpreter put there, must not shadow the recipe's modules).
    if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
        sys.path.pop(0)
    sys.path.insert(0, str(script.parent))
    sys.argv = [str(script), *options.args]

    import torch

    from reprohunt import speechbrain_result
    from reprohunt.result import ResultError
    from reprohunt.speechbrain_recipe import sorted_listings

    torch.set_num_threads(options.threads)
    records = speechbrain_result.install_hooks()
    with sorted_listings(), portable_math(options.numerics == "portable"):
        runpy.run_path(str(script), run_name="__main__")
    if records.hpopt_enabled:
        return 0
    try:
        path = speechbrain_result.write(records, options.args, options.result)
    except ResultError as error:
        print(f"error: {script}: {error}", file=sys.stderr)
        return 1
    print(f"result: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
