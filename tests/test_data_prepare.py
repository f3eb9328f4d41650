"""The speaker-id recipe's data preparation: outputs, determinism, LibriSpeech, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import TINY_PREPARE_ARGS, run_prepare

from hpopt.files import digest_of, sha256_file
from reprohunt.recipe import prepare_flags

SPLITS = ("train", "valid", "test")


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_outputs_follow_the_documented_layout(prepared_tiny: Path) -> None:
    summary = _json(prepared_tiny / "prepared.json")
    assert summary["source"] == "synthetic" and summary["seed"] == 7
    assert summary["n_mels"] == 40 and summary["speakers"] == 4
    assert summary["counts"] == {"train": 16, "valid": 4, "test": 4}
    assert summary["data_root"] == "corpus"
    labels = _json(prepared_tiny / "manifests/labels.json")
    assert sorted(labels.values()) == list(range(4))
    for split in SPLITS:
        manifest = _json(prepared_tiny / f"manifests/{split}.json")
        assert len(manifest) == summary["counts"][split]
        # every speaker appears in every split
        assert {entry["spk_id"] for entry in manifest.values()} == set(labels)
        index = _json(prepared_tiny / f"features/{split}.index.json")
        array = np.load(prepared_tiny / f"features/{split}.npy", mmap_mode="r")
        assert array.dtype == np.float32 and array.shape[1] == 40
        assert sum(u["frames"] for u in index["utterances"].values()) == array.shape[0]
        for utt_id, entry in manifest.items():
            assert entry["wav"].startswith("{data_root}/LibriSpeech/train-clean-5/")
            wav = prepared_tiny / "corpus" / entry["wav"].removeprefix("{data_root}/")
            assert utt_id == wav.stem and entry["spk_id"] == utt_id.split("-")[0]
            assert entry["length"] == pytest.approx(sf.info(str(wav)).duration)
            assert index["utterances"][utt_id]["spk_id"] == entry["spk_id"]
    with np.load(prepared_tiny / "features/stats.npz") as stats:
        train = np.load(prepared_tiny / "features/train.npy").astype(np.float64)
        assert np.allclose(stats["mean"], train.mean(axis=0))
        assert np.allclose(stats["var"], train.var(axis=0))
    assert not list(prepared_tiny.parent.glob(".*tmp*"))


def test_hashes_cover_every_file_and_the_summary_digests_them(prepared_tiny: Path) -> None:
    hashes = _json(prepared_tiny / "hashes.json")
    summary = _json(prepared_tiny / "prepared.json")
    assert len(hashes["audio"]) == 24
    for relpath, sha in hashes["audio"].items():
        assert sha256_file(prepared_tiny / "corpus" / relpath) == sha
    for group in ("features", "manifests"):
        on_disk = {
            p.relative_to(prepared_tiny).as_posix() for p in (prepared_tiny / group).iterdir()
        }
        assert set(hashes[group]) == on_disk
    assert summary["corpus_sha256"] == digest_of(hashes["audio"])
    assert summary["features_sha256"] == digest_of(hashes["features"])


def test_same_arguments_give_identical_bytes(prepared_tiny: Path, tmp_path: Path) -> None:
    run = run_prepare(*TINY_PREPARE_ARGS, "--out", str(tmp_path / "again"))
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "again/hashes.json").read_bytes() == (
        prepared_tiny / "hashes.json"
    ).read_bytes()
    assert (tmp_path / "again/prepared.json").read_bytes() == (
        prepared_tiny / "prepared.json"
    ).read_bytes()


def test_a_librispeech_tree_goes_through_the_minilibrispeech_path(
    prepared_tiny: Path, tmp_path: Path
) -> None:
    # The generator's output, handed over as an extracted mini-LibriSpeech, must give the same
    # manifests and features: both sources share one reading/splitting/feature code path.
    corpus = tmp_path / "extracted"
    shutil.copytree(prepared_tiny / "corpus", corpus)
    out = tmp_path / "libri"
    run = run_prepare("--source", "minilibrispeech", "--extracted", str(corpus), "--out", str(out))
    assert run.returncode == 0, run.stderr
    summary, reference = _json(out / "prepared.json"), _json(prepared_tiny / "prepared.json")
    assert summary["source"] == "minilibrispeech" and summary["archive"] is None
    assert summary["data_root"] == str(corpus.resolve())
    for key in ("corpus_sha256", "features_sha256", "manifests_sha256", "counts"):
        assert summary[key] == reference[key], key
    # the LibriSpeech/ and train-clean-5/ levels are accepted too
    for deeper in (corpus / "LibriSpeech", corpus / "LibriSpeech/train-clean-5"):
        run = run_prepare(
            "--source", "minilibrispeech", "--extracted", str(deeper), "--out", str(tmp_path / "d")
        )
        assert run.returncode == 0, run.stderr
        shutil.rmtree(tmp_path / "d")


def test_split_seed_changes_the_split_not_the_speakers(prepared_tiny: Path, tmp_path: Path) -> None:
    corpus = prepared_tiny / "corpus"
    out = tmp_path / "other"
    run = run_prepare(
        "--source",
        "minilibrispeech",
        "--extracted",
        str(corpus),
        "--split-seed",
        "5",
        "--out",
        str(out),
    )
    assert run.returncode == 0, run.stderr
    assert (
        _json(out / "manifests/valid.json").keys()
        != _json(prepared_tiny / "manifests/valid.json").keys()
    )
    assert _json(out / "manifests/labels.json") == _json(prepared_tiny / "manifests/labels.json")


def test_the_workflows_data_section_reaches_the_prepare_script(tmp_path: Path) -> None:
    """prepare_flags (the prepare rule's arguments) as the script parses them: the list-valued
    split_ratio, only the selected source's group, and no None value."""
    data = {
        "source": "synthetic",
        "n_mels": 24,
        "split_ratio": [40, 30, 30],
        "synthetic": {"seed": 7, "n_speakers": 2, "utts_per_speaker": 10},
        "minilibrispeech": {"download_dir": "unused", "extracted": None},
    }
    argv = prepare_flags(data)
    assert argv == [
        *("--source", "synthetic", "--n-mels", "24", "--split-ratio", "40", "30", "30"),
        *("--seed", "7", "--n-speakers", "2", "--utts-per-speaker", "10"),
    ]
    out = tmp_path / "prepared"
    finished = run_prepare(*argv, "--min-seconds", "0.3", "--max-seconds", "0.4", "--out", str(out))
    assert finished.returncode == 0, finished.stderr
    summary = _json(out / "prepared.json")
    assert summary["split_ratio"] == [40, 30, 30] and summary["n_mels"] == 24
    assert summary["counts"] == {"train": 8, "valid": 6, "test": 6}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--n-speakers", "1"], "--n-speakers must be at least 2"),
        (["--utts-per-speaker", "2"], "--utts-per-speaker must be at least 3"),
        (["--n-mels", "0"], "--n-mels must be between 1 and 128"),
        (["--min-seconds", "2", "--max-seconds", "1"], "--min-seconds"),
        (["--split-ratio", "80", "20", "0"], "--split-ratio"),
        (["--extracted", "/nowhere"], "--extracted applies to --source minilibrispeech only"),
    ],
)
def test_bad_synthetic_arguments_stop_before_any_work(
    tmp_path: Path, args: list[str], message: str
) -> None:
    run = run_prepare("--source", "synthetic", "--out", str(tmp_path / "out"), *args)
    assert run.returncode == 2
    assert message in run.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "exactly one of --download-dir or --extracted"),
        (
            ["--extracted", "X", "--download-dir", "Y"],
            "exactly one of --download-dir or --extracted",
        ),
        (["--extracted", "/nowhere"], "no LibriSpeech/train-clean-5 folder"),
        (["--download-dir", "D", "--url", "http://127.0.0.1:9/a.tar.gz"], "needs --sha256"),
        (["--download-dir", "D", "--sha256", "abc"], "--sha256 must be 64 hex digits"),
        (["--download-dir", "out/dl"], "--download-dir must not be inside --out"),
        (["--download-dir", "D", "--seed", "3"], "--seed applies to --source synthetic only"),
    ],
)
def test_bad_minilibrispeech_arguments_stop_before_any_work(
    tmp_path: Path, args: list[str], message: str
) -> None:
    args = [str(tmp_path / a) if a in ("X", "Y", "D", "out/dl") else a for a in args]
    run = run_prepare("--source", "minilibrispeech", "--out", str(tmp_path / "out"), *args)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite_and_is_then_replaced(
    prepared_tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    args = ("--source", "minilibrispeech", "--extracted", str(prepared_tiny / "corpus"))
    run = run_prepare(*args, "--out", str(out))
    assert run.returncode == 2 and "--overwrite" in run.stderr
    assert (out / "precious.txt").read_text() == "keep me"
    run = run_prepare(*args, "--out", str(out), "--overwrite")
    assert run.returncode == 0, run.stderr
    assert (out / "prepared.json").is_file() and not (out / "precious.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _broken_corpus(prepared_tiny: Path, tmp_path: Path) -> Path:
    corpus = tmp_path / "corpus"
    shutil.copytree(prepared_tiny / "corpus", corpus)
    return corpus


def _first_flac(corpus: Path) -> Path:
    return sorted(corpus.rglob("*.flac"))[0]


@pytest.mark.parametrize("damage", ["corrupt", "empty_speaker", "misnamed", "8khz", "truncated"])
def test_bad_audio_is_named_and_leaves_no_output(
    prepared_tiny: Path, tmp_path: Path, damage: str
) -> None:
    corpus = _broken_corpus(prepared_tiny, tmp_path)
    victim = _first_flac(corpus)
    if damage == "corrupt":
        victim.write_bytes(b"not a flac file at all")
    elif damage == "empty_speaker":
        victim = corpus / "LibriSpeech/train-clean-5/9999"
        (victim / "12").mkdir(parents=True)
    elif damage == "misnamed":
        victim = victim.rename(victim.with_name("1-2-3.flac"))
    elif damage == "8khz":
        signal, _ = sf.read(str(victim))
        sf.write(str(victim), signal, 8000, format="FLAC")
    else:  # header intact, audio data cut off
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    run = run_prepare("--source", "minilibrispeech", "--extracted", str(corpus), "--out", str(out))
    assert run.returncode == 1, run.stdout + run.stderr
    assert str(victim) in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]
