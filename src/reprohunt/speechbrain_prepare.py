"""`python -m reprohunt.speechbrain_prepare …`: the prepare rule for a SpeechBrain recipe as it is.

Builds the data folder every run of the recipe reads (the layout SpeechBrain's recipes expect
under `data_folder`), then records it for the data contract (reprohunt.dataverify):

    DATA/LibriSpeech/train-clean-5/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac   the corpus
    DATA/noise/*.wav, DATA/noise/data.zip     the local noise set (the archive's presence
                                              makes SpeechBrain skip its download)
    DATA/manifests/<key>.json                 what the recipe's own prepare function wrote
    DATA/hashes.json, DATA/prepared.json      the records, prepared.json last

The corpus is the embedded synthetic one (the speaker-id recipe's generator, the offline
stand-in for mini-LibriSpeech). The recipe's prepare function is imported from its file and
called once, with the working directory inside DATA (so nothing it writes lands anywhere else),
Python's `random` seeded with `split_seed` (SpeechBrain's preparations shuffle with it; in
train.py, seed_everything has seeded it first) and directory listings sorted (they come in file
system order, which the split would otherwise depend on).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import inspect
import json
import os
import platform
import random
import shutil
import sys
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from hpopt.files import digest_of, disk_full_named, sha256_file, write_json_atomically
from reprohunt.speechbrain_recipe import (
    MANIFESTS_DIR,
    NOISE_ARCHIVE,
    NOISE_DIR,
    SPEAKER_ID_RECIPE,
    check_data,
    sorted_listings,
)

FORMAT_VERSION = 1
SAMPLE_RATE = 16000
# A fixed time for the archive's members, so the same noise set gives the same data.zip bytes.
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class PrepareError(Exception):
    """A data option or the recipe's prepare function is wrong; the message says which."""


@dataclass(frozen=True)
class NoiseConfig:
    """The local noise set: `files` recordings of `seconds` each, colours cycling."""

    seed: int = 0
    files: int = 6
    seconds: float = 3.0


def _noise(colour: int, samples: int, rng: Any) -> Any:
    """White, pink, brown or band-limited noise: spectra the augmenter should see differ."""
    import numpy as np

    white = rng.normal(0.0, 1.0, samples)
    spectrum = np.fft.rfft(white)
    frequencies = np.fft.rfftfreq(samples, 1.0 / SAMPLE_RATE)
    frequencies[0] = frequencies[1]
    if colour == 1:
        spectrum /= np.sqrt(frequencies)
    elif colour == 2:
        spectrum /= frequencies
    elif colour == 3:
        spectrum *= (frequencies > 300.0) & (frequencies < 3400.0)
    signal = np.fft.irfft(spectrum, samples)
    return 0.3 * signal / np.max(np.abs(signal))


def write_noise_set(config: NoiseConfig, folder: Path) -> list[Path]:
    """16-bit WAV noise recordings and their data.zip, the same bytes for the same config."""
    import numpy as np
    import soundfile

    folder.mkdir(parents=True)
    written = []
    for index in range(config.files):
        rng = np.random.default_rng([config.seed, index])
        path = folder / f"noise{index:02d}.wav"
        signal = _noise(index % 4, int(config.seconds * SAMPLE_RATE), rng)
        soundfile.write(path, signal, SAMPLE_RATE, subtype="PCM_16", format="WAV")
        written.append(path)
    with zipfile.ZipFile(folder / NOISE_ARCHIVE, "w", zipfile.ZIP_STORED) as archive:
        for path in written:
            member = zipfile.ZipInfo(path.name, date_time=ZIP_TIME)
            archive.writestr(member, path.read_bytes())
    return written


@contextlib.contextmanager
def _reproducible_call(folder: Path, seed: int) -> Iterator[None]:
    """Inside `folder`, with `random` seeded and directory listings sorted; all restored after."""
    cwd, state = os.getcwd(), random.getstate()
    random.seed(seed)
    os.chdir(folder)
    try:
        with sorted_listings():
            yield
    finally:
        os.chdir(cwd)
        random.setstate(state)


def load_prepare_function(recipe_dir: Path, prepare_file: str, name: str) -> Any:
    """The recipe's prepare function, imported the way its train.py imports it."""
    sys.path.insert(0, str(recipe_dir.resolve()))
    spec = importlib.util.spec_from_file_location(
        Path(prepare_file).stem, recipe_dir / prepare_file
    )
    if spec is None or spec.loader is None:
        raise PrepareError(f"{recipe_dir / prepare_file}: not a Python module")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = getattr(module, name, None)
    if not callable(function):
        raise PrepareError(f"{recipe_dir / prepare_file} defines no function {name!r}")
    return function


def prepare_kwargs(
    function: Any, settings: Mapping[str, Any], data: Mapping[str, Any], out: Path
) -> dict[str, Any]:
    """The call: data folder and manifest paths under the recipe's argument names, and every
    `data` option that is a parameter of the function (e.g. `split_ratio`)."""
    parameters = inspect.signature(function).parameters
    kwargs: dict[str, Any] = {settings["data_folder_arg"]: str(out)}
    for key, argument in settings["manifests"].items():
        kwargs[argument] = str(out / MANIFESTS_DIR / f"{key}.json")
    kwargs |= {key: value for key, value in data.items() if key in parameters}
    unknown = [argument for argument in kwargs if argument not in parameters]
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    if unknown and not accepts_any:
        raise PrepareError(
            f"{function.__name__}() has no parameter(s) {', '.join(unknown)}; set "
            "recipe.speechbrain.data_folder_arg / manifests to its argument names "
            f"(it takes: {', '.join(parameters)})"
        )
    return kwargs


def _synthetic_config(options: Mapping[str, Any]) -> Any:
    sys.path.insert(0, str(SPEAKER_ID_RECIPE))
    from speaker_data.synthetic import SyntheticConfig

    known = {item.name for item in fields(SyntheticConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise PrepareError(f"data.synthetic: unknown key(s) {unknown}; known: {sorted(known)}")
    return SyntheticConfig(**options)


def _hash_files(paths: list[Path], base: Path) -> dict[str, str]:
    return {path.relative_to(base).as_posix(): sha256_file(path) for path in sorted(paths)}


def build(
    recipe_dir: Path, settings: Mapping[str, Any], data: Mapping[str, Any], out: Path
) -> dict[str, Any]:
    """Corpus, noise set and the recipe's manifests in `out`; returns prepared.json's summary."""
    problems = check_data(data, "the config")  # the Snakefile checked it; a by-hand call not
    if problems:
        raise PrepareError(problems[0])
    corpus = _synthetic_config(data.get("synthetic") or {})
    noise = NoiseConfig(**(data.get("noise") or {}))
    function = load_prepare_function(
        recipe_dir, settings["prepare_file"], settings["prepare_function"]
    )
    kwargs = prepare_kwargs(function, settings, data, out)
    split_seed = int(data.get("split_seed", corpus.seed))

    from speaker_data.synthetic import generate_corpus

    print(f"generating {corpus.n_speakers}x{corpus.utts_per_speaker} synthetic utterances")
    audio = [out / path for path in generate_corpus(corpus, out)]
    noise_files = write_noise_set(noise, out / NOISE_DIR) if settings["noise_folder"] else []
    (out / MANIFESTS_DIR).mkdir()
    print(f"{settings['prepare_function']}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})")
    with _reproducible_call(out, split_seed):
        function(**kwargs)
    before = set(audio) | set(noise_files) | {out / NOISE_DIR / NOISE_ARCHIVE}
    written = [path for path in out.rglob("*") if path.is_file() and path not in before]
    missing = [
        key
        for key in settings["manifests"]
        if not Path(kwargs[settings["manifests"][key]]).is_file()
    ]
    if missing:
        raise PrepareError(
            f"{settings['prepare_function']}() wrote no manifest for {', '.join(missing)}"
        )
    hashes = {
        "audio": _hash_files(audio, out),
        "noise": _hash_files([*noise_files, out / NOISE_DIR / NOISE_ARCHIVE], out)
        if noise_files
        else {},
        "manifests": _hash_files(written, out),
    }
    write_json_atomically(out / "hashes.json", hashes, indent=2)
    counts = {
        key: len(json.loads(Path(kwargs[argument]).read_text()))
        for key, argument in settings["manifests"].items()
    }
    return {
        "format_version": FORMAT_VERSION,
        "source": "synthetic",
        "synthetic": corpus.as_dict(),
        "noise": vars(noise) if noise_files else None,
        "data_root": ".",
        "prepare": {
            "file": settings["prepare_file"],
            "function": settings["prepare_function"],
            # The data folder as DATA, so the record does not depend on where the clone lives.
            "kwargs": {k: str(v).replace(str(out), "DATA") for k, v in kwargs.items()},
            "split_seed": split_seed,
        },
        "counts": counts,
        "corpus_sha256": digest_of(hashes["audio"]),
        "manifests_sha256": digest_of(hashes["manifests"]),
        "versions": _versions(),
    }


def _versions() -> dict[str, str]:
    import numpy
    import soundfile
    import speechbrain
    import torch

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "speechbrain": speechbrain.__version__,
        "soundfile": soundfile.__version__,
        "libsndfile": soundfile.__libsndfile_version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reprohunt.speechbrain_prepare")
    parser.add_argument("--recipe", type=Path, required=True, help="the recipe folder")
    parser.add_argument("--prepare", required=True, help="its prepare file, relative to --recipe")
    parser.add_argument("--settings", required=True, help="recipe.speechbrain, as JSON")
    parser.add_argument("--data", required=True, help="the config's data section, as JSON")
    parser.add_argument("--out", type=Path, required=True, help="the data folder to build")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args(argv)
    settings = json.loads(args.settings) | {"prepare_file": args.prepare}
    out = args.out.resolve()
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        parser.error(f"--out {args.out} already exists; pass --overwrite to replace it")
    # Built in place: the recipe's function may record absolute paths, which a rename would
    # break. prepared.json, written last, is what marks the folder complete.
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    try:
        with disk_full_named(out):
            summary = build(args.recipe, settings, json.loads(args.data), out)
            write_json_atomically(out / "prepared.json", summary, indent=2)
    except PrepareError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"prepared {out}: " + ", ".join(f"{k} {v}" for k, v in summary["counts"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
