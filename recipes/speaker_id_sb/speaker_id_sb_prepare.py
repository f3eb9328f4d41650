"""Data preparation for the SpeechBrain-idiom speaker-id recipe.

Turns a folder laid out like LibriSpeech's ``train-clean-5`` subset into the three JSON
manifests (train / valid / test) that ``train.py`` reads with
``DynamicItemDataset.from_json``.

Unlike SpeechBrain's ``mini_librispeech_prepare.py``, nothing is downloaded here: the function
works offline on any folder with the LibriSpeech layout, for instance the real mini-LibriSpeech
extracted by hand, or the synthetic corpus of ``recipes/speaker_id/speaker_data``. The split is
made *per speaker*, so that every speaker appears in all three sets (speaker identification
needs each class in training and in evaluation).

Authors
 * reprohunt contributors
"""

import json
import os
import random
from collections import defaultdict
from pathlib import Path

import soundfile
from speechbrain.utils.logger import get_logger

logger = get_logger(__name__)

#: Where the utterances live, relative to ``data_folder``.
SUBSET = os.path.join("LibriSpeech", "train-clean-5")
SPLITS = ("train", "valid", "test")


def prepare_speaker_id(
    data_folder,
    save_json_train,
    save_json_valid,
    save_json_test,
    split_ratio=(80, 10, 10),
):
    """Writes train/valid/test JSON manifests for a LibriSpeech-layout speaker-id corpus.

    Every ``*.flac`` below ``<data_folder>/LibriSpeech/train-clean-5`` is listed (layout
    ``<spk>/<chapter>/<spk>-<chapter>-<utt>.flac``). Each speaker's utterances are sorted,
    shuffled with Python's ``random`` module (seeded by ``speechbrain.utils.seed_everything``
    from the ``seed`` of train.yaml, so the same seed gives the same split) and cut according
    to ``split_ratio``; each manifest is then shuffled as a whole, because the recipe reads it
    in order. Works offline: nothing is downloaded.

    Arguments
    ---------
    data_folder : str
        Folder that holds ``LibriSpeech/train-clean-5``.
    save_json_train : str
        Path of the training manifest to write.
    save_json_valid : str
        Path of the validation manifest to write.
    save_json_test : str
        Path of the test manifest to write.
    split_ratio : sequence
        Three non-negative numbers: the share of each speaker's utterances that goes to
        train, valid and test. Every split with a non-zero share gets at least one
        utterance of every speaker.

    Returns
    -------
    None

    Raises
    ------
    FileNotFoundError
        If ``<data_folder>/LibriSpeech/train-clean-5`` is missing or holds no ``.flac`` file.
    ValueError
        If ``split_ratio`` is malformed, or a speaker has too few utterances to appear in
        every split.

    Example
    -------
    >>> prepare_speaker_id(
    ...     "/data/mini_librispeech", "train.json", "valid.json", "test.json"
    ... )  # doctest: +SKIP
    """
    json_files = {"train": save_json_train, "valid": save_json_valid, "test": save_json_test}
    if all(os.path.isfile(path) for path in json_files.values()):
        logger.info("Manifests %s already exist, skipping preparation.", list(json_files.values()))
        return

    _check_split_ratio(split_ratio)
    subset_folder = os.path.join(data_folder, SUBSET)
    if not os.path.isdir(subset_folder):
        raise FileNotFoundError(
            f"Speaker-id data not found: {subset_folder!r} is not a folder. This recipe does "
            "not download anything; point --data_folder at a folder holding "
            "LibriSpeech/train-clean-5/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac."
        )

    by_speaker = _utterances_by_speaker(subset_folder)
    if not by_speaker:
        raise FileNotFoundError(f"No .flac file found below {subset_folder!r}.")
    logger.info(
        "Found %d utterances of %d speakers in %s",
        sum(len(files) for files in by_speaker.values()),
        len(by_speaker),
        subset_folder,
    )

    chosen = {split: [] for split in SPLITS}
    for spk_id in sorted(by_speaker):
        parts = _split_one_speaker(spk_id, by_speaker[spk_id], split_ratio)
        for split, files in zip(SPLITS, parts, strict=True):
            chosen[split].extend((spk_id, flac) for flac in files)

    for split in SPLITS:
        # The recipe reads batches in manifest order (no shuffling in the data loader), so the
        # manifest itself is shuffled, with the same seeded `random`: listed speaker by
        # speaker, every batch would hold one or two speakers only, which stalls training
        # (and skews BatchNorm statistics).
        random.shuffle(chosen[split])
        manifest = {}
        for spk_id, flac in chosen[split]:
            manifest.update(_manifest_entry(flac, data_folder, spk_id))
        _write_json(manifest, json_files[split])


def _check_split_ratio(split_ratio):
    """Refuses a ratio that cannot describe a train/valid/test split, before any work."""
    if len(split_ratio) != 3 or any(share < 0 for share in split_ratio) or split_ratio[0] <= 0:
        raise ValueError(
            "split_ratio must be three non-negative numbers with a positive train share, "
            f"got {split_ratio!r}"
        )


def _utterances_by_speaker(subset_folder):
    """Maps each speaker id (first field of the file name) to its sorted list of flac paths.

    Sorting makes the list independent of the file system's directory order, so that the
    seeded shuffle that follows is the only source of randomness in the split.
    """
    by_speaker = defaultdict(list)
    for flac in sorted(Path(subset_folder).rglob("*.flac")):
        by_speaker[flac.stem.split("-")[0]].append(flac)
    return by_speaker


def _split_one_speaker(spk_id, files, split_ratio):
    """Shuffles one speaker's utterances and cuts them into (train, valid, test) lists.

    The valid and test counts are rounded down from the ratio but kept at one or more for
    every non-zero share, so that even a speaker with few utterances is evaluated; the
    training set takes the rest.
    """
    wanted = sum(1 for share in split_ratio if share > 0)
    if len(files) < wanted:
        raise ValueError(
            f"Speaker {spk_id} has {len(files)} utterance(s); split_ratio {split_ratio!r} "
            f"needs at least {wanted} to put the speaker in every split."
        )
    files = list(files)
    random.shuffle(files)
    total = sum(split_ratio)
    n_valid, n_test = (
        max(1, int(len(files) * share / total)) if share > 0 else 0 for share in split_ratio[1:]
    )
    n_train = len(files) - n_valid - n_test
    if n_train < 1:
        raise ValueError(f"Speaker {spk_id}: no utterance left for training.")
    return files[:n_train], files[n_train : n_train + n_valid], files[n_train + n_valid :]


def _manifest_entry(flac, data_folder, spk_id):
    """One manifest item; the path uses the ``{data_root}`` placeholder that train.py fills in.

    Keeping the data folder out of the manifest lets the same JSON files be used wherever the
    corpus is mounted (``replacements={"data_root": ...}`` in ``from_json``).
    """
    relative = Path(os.path.relpath(flac, data_folder)).as_posix()
    return {
        flac.stem: {
            "wav": "{data_root}/" + relative,
            "length": soundfile.info(str(flac)).duration,
            "spk_id": spk_id,
        }
    }


def _write_json(manifest, json_file):
    """Writes one manifest, creating its folder if needed."""
    folder = os.path.dirname(json_file)
    if folder:
        os.makedirs(folder, exist_ok=True)
    with open(json_file, mode="w", encoding="utf-8") as fout:
        json.dump(manifest, fout, indent=2)
    logger.info("Wrote %s (%d utterances)", json_file, len(manifest))
