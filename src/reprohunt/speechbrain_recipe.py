"""SpeechBrain recipes as they are: what the workflow adds to a recipe that knows nothing of it.

A SpeechBrain recipe (SpeechBrain's `templates/hyperparameter_optimization_speaker_id`, or one
written the same way) prepares its own data inside `train.py` unless `skip_prep` is set, reads
JSON manifests named by train.yaml keys, downloads a noise set at every start, and reports
through SpeechBrain's own `hpopt` and train logger instead of writing a result file. The config's
`recipe.speechbrain` section names those parts, with the template's names as defaults, and the
workflow then:

- runs the recipe's `*_prepare` function once, in the prepare rule, into the data folder
  (reprohunt.speechbrain_prepare), beside the embedded corpus in LibriSpeech layout and a local
  noise set;
- passes every run `--skip_prep True`, the manifests' paths and the local noise set through the
  recipe's own keys (:func:`run_overrides`), so nothing is prepared or downloaded twice;
- starts every run through reprohunt/speechbrain_run.py, which records what the recipe reports
  at full precision and writes the result file of the result contract.

Stdlib only, like reprohunt.recipe: the Snakefile checks a config with it in the workflow env.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

# The names SpeechBrain's speaker-id templates use; a config names others where a recipe differs.
DEFAULTS: dict[str, Any] = {
    "data_folder_arg": "data_folder",
    "manifests": {
        "train_annotation": "save_json_train",
        "valid_annotation": "save_json_valid",
        "test_annotation": "save_json_test",
    },
    "skip_prep": "skip_prep",
    "noise_folder": "data_folder_noise",
    "num_threads": 1,
}
# Where the prepare rule puts the recipe's manifests and the noise set, inside the data folder.
MANIFESTS_DIR = "manifests"
NOISE_DIR = "noise"
# The name SpeechBrain's prepare_dataset_from_URL gives the archive it downloads: when the
# noise folder holds it, SpeechBrain neither downloads nor unpacks (given a local path instead of
# a URL it would copy the file onto itself and fail, so the recipe's URL is left as it is).
NOISE_ARCHIVE = "data.zip"
# The speaker-id recipe's folder: its data package (speaker_data) holds the embedded corpus's
# generator and the IEEE-exact sqrt and log10, which SpeechBrain recipes use too.
SPEAKER_ID_RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "speaker_id"
RUNNER = Path(__file__).with_name("speechbrain_run.py")
PREPARE = Path(__file__).with_name("speechbrain_prepare.py")


def script(path: Path) -> str:
    """One of these scripts as a command names it: relative to the working directory when
    inside it (like the recipe's own paths), so a moved clone keeps its commands."""
    here = Path.cwd()
    return str(path.relative_to(here)) if path.is_relative_to(here) else str(path)


@contextlib.contextmanager
def sorted_listings() -> Iterator[None]:
    """Directory listings in name order, while a SpeechBrain recipe prepares or runs.

    SpeechBrain builds its file lists (the corpus a prepare function splits, the noise set's
    CSV the augmenter draws from by index) in `os.listdir` order, which is the file system's:
    the same files would give another split or other noise on another machine."""
    listdir = os.listdir
    os.listdir = lambda path=".": sorted(listdir(path))  # type: ignore[assignment]
    try:
        yield
    finally:
        os.listdir = listdir


def settings(section: Mapping[str, Any]) -> dict[str, Any]:
    """The `recipe.speechbrain` section with the template's names where it leaves them out."""
    return {key: section.get(key, default) for key, default in DEFAULTS.items()} | {
        "prepare_function": section["prepare_function"]
    }


def check(
    section: Mapping[str, Any],
    prepare_file: Path,
    train_keys: set[str],
    where: str,
) -> list[str]:
    """Every way the section disagrees with the recipe's files (empty: it agrees).

    Read as text, not imported: the workflow env has no SpeechBrain, and a config error must be
    named before any job. The prepare function must be defined in the prepare file; every key
    the workflow overrides must be a top-level key of train.yaml, or HyperPyYAML refuses it.
    """
    found = []
    function = section["prepare_function"]
    if not re.search(rf"^def {re.escape(function)}\(", prepare_file.read_text(), re.M):
        found.append(
            f"{where}.prepare_function: {prepare_file} defines no function {function!r}; name "
            "the function the recipe's train.py calls to prepare its data"
        )
    keys = {f"{where}.skip_prep": section["skip_prep"]}
    keys |= {f"{where}.manifests.{key}": key for key in section["manifests"]}
    if section["noise_folder"]:
        keys[f"{where}.noise_folder"] = section["noise_folder"]
    found += [
        f"{name}: {key!r} is not a top-level key of train.yaml; set it to the recipe's key "
        f"(or {where}.noise_folder: null for a recipe without a noise set)"
        for name, key in keys.items()
        if key not in train_keys
    ]
    return found


def check_data(data: Mapping[str, Any], config_file: str) -> list[str]:
    """The data section a SpeechBrain recipe can run on: the embedded corpus, for now."""
    if data.get("source") == "synthetic":
        return []
    return [
        f"{config_file}: data.source is {data.get('source')!r}; a SpeechBrain recipe runs on "
        "the embedded corpus in LibriSpeech layout (data: {source: synthetic, synthetic: "
        "{seed: N, n_speakers: N, utts_per_speaker: N}}), the offline stand-in for "
        "mini-LibriSpeech"
    ]


def run_overrides(section: Mapping[str, Any], data_folder: str) -> list[str]:
    """What every run of the recipe gets besides its own arguments: skip the preparation, read
    the prepared manifests, and take the noise set from the prepared folder (which holds the
    archive, so nothing is downloaded; each run writes its noise list into its own folder)."""
    argv = [f"--{section['skip_prep']}", "True"]
    for key in sorted(section["manifests"]):
        argv += [f"--{key}", f"{data_folder}/{MANIFESTS_DIR}/{key}.json"]
    if section["noise_folder"]:
        argv += [f"--{section['noise_folder']}", f"{data_folder}/{NOISE_DIR}"]
    return argv
