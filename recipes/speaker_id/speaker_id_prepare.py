"""Build a prepared data folder for the speaker-id recipe (its `*_prepare.py`, as in SpeechBrain).

    python speaker_id_prepare.py --source synthetic --out DIR [--seed N] [--n-speakers N] ...
    python speaker_id_prepare.py --source minilibrispeech --out DIR \\
        (--download-dir DIR | --extracted PATH) [--split-seed N] [--n-mels N]

Every argument is checked before any work. The folder is built under a temporary sibling name
and renamed into place at the end, with ``prepared.json`` written last: a folder named DIR that
holds ``prepared.json`` is complete, and a failed run leaves nothing that looks complete.
The layout of DIR is documented in recipes/speaker_id/README.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from speaker_data.errors import DataError
from speaker_data.prepared import FORMAT_VERSION, SUBSET
from speaker_data.synthetic import SyntheticConfig

from hpopt.files import digest_of, disk_full_named, sha256_file, write_json_atomically

SOURCES = ("synthetic", "minilibrispeech")
DEFAULT_N_MELS = 40
DEFAULT_SPLIT_SEED = 1986
_SYNTHETIC_ONLY = ("seed", "n_speakers", "utts_per_speaker", "min_seconds", "max_seconds", "snr_db")
_MINILIBRISPEECH_ONLY = ("download_dir", "extracted", "url", "sha256")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python recipes/speaker_id/speaker_id_prepare.py",
        description="Prepare manifests, cached log-mel features and hashes for the speaker-id "
        "recipe, from the embedded synthetic corpus or from mini-LibriSpeech.",
    )
    parser.add_argument("--source", required=True, choices=SOURCES)
    parser.add_argument("--out", required=True, type=Path, help="prepared folder to create")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--n-mels", type=int, default=DEFAULT_N_MELS, help="log-mel bands (40)")
    parser.add_argument(
        "--split-seed", type=int, default=DEFAULT_SPLIT_SEED, help="seed of the split"
    )
    parser.add_argument(
        "--split-ratio",
        type=int,
        nargs=3,
        default=[80, 10, 10],
        metavar=("TRAIN", "VALID", "TEST"),
        help="percentages of each speaker's utterances (80 10 10)",
    )
    synthetic = parser.add_argument_group("--source synthetic")
    defaults = SyntheticConfig()
    synthetic.add_argument("--seed", type=int, help=f"corpus generation seed ({defaults.seed})")
    synthetic.add_argument("--n-speakers", type=int, help=f"speakers ({defaults.n_speakers})")
    synthetic.add_argument(
        "--utts-per-speaker", type=int, help=f"utterances per speaker ({defaults.utts_per_speaker})"
    )
    synthetic.add_argument(
        "--min-seconds", type=float, help=f"shortest utterance ({defaults.min_seconds})"
    )
    synthetic.add_argument(
        "--max-seconds", type=float, help=f"longest utterance ({defaults.max_seconds})"
    )
    synthetic.add_argument(
        "--snr-db",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help=f"noise SNR range ({defaults.snr_db_low} {defaults.snr_db_high})",
    )
    libri = parser.add_argument_group("--source minilibrispeech")
    libri.add_argument("--download-dir", type=Path, help="where the archive is fetched/extracted")
    libri.add_argument("--extracted", type=Path, help="an already extracted corpus (offline)")
    libri.add_argument("--url", help="archive URL (default: OpenSLR resource 31)")
    libri.add_argument("--sha256", help="expected SHA-256 of the archive")
    libri.add_argument("--timeout", type=float, default=60.0, help="network timeout, seconds")
    return parser


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject bad or conflicting arguments (exit 2) before anything is downloaded or written."""
    from speaker_data.download import OFFICIAL_URL
    from speaker_data.features import MAX_N_MELS
    from speaker_data.librispeech import find_data_root

    if not 1 <= args.n_mels <= MAX_N_MELS:
        parser.error(f"--n-mels must be between 1 and {MAX_N_MELS}, got {args.n_mels}")
    if sum(args.split_ratio) != 100 or min(args.split_ratio) < 1:
        parser.error(
            f"--split-ratio must be three positive integers summing to 100, got {args.split_ratio}"
        )
    out = args.out.resolve()
    if out.exists() and not out.is_dir():
        parser.error(f"--out {args.out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        parser.error(f"--out {args.out} already exists; pass --overwrite to replace it")
    if args.source == "synthetic":
        _reject(parser, args, _MINILIBRISPEECH_ONLY, "minilibrispeech")
        defaults = SyntheticConfig()
        for key in ("seed", "n_speakers", "utts_per_speaker", "min_seconds", "max_seconds"):
            if getattr(args, key) is None:
                setattr(args, key, getattr(defaults, key))
        if args.snr_db is None:
            args.snr_db = [defaults.snr_db_low, defaults.snr_db_high]
        if args.n_speakers < 2:
            parser.error(f"--n-speakers must be at least 2, got {args.n_speakers}")
        if args.utts_per_speaker < 3:
            parser.error(
                f"--utts-per-speaker must be at least 3 (train, valid and test need one each), "
                f"got {args.utts_per_speaker}"
            )
        if not 0.2 <= args.min_seconds <= args.max_seconds:
            parser.error(
                "--min-seconds must be at least 0.2 and at most --max-seconds, got "
                f"{args.min_seconds} and {args.max_seconds}"
            )
        if args.snr_db[0] > args.snr_db[1]:
            parser.error(f"--snr-db LOW HIGH must have LOW <= HIGH, got {args.snr_db}")
        return
    _reject(parser, args, _SYNTHETIC_ONLY, "synthetic")
    if (args.download_dir is None) == (args.extracted is None):
        parser.error("--source minilibrispeech needs exactly one of --download-dir or --extracted")
    if args.extracted is not None:
        if args.url or args.sha256:
            parser.error("--url/--sha256 apply to --download-dir, not to --extracted")
        try:
            root = find_data_root(args.extracted)
        except DataError as err:
            parser.error(f"--extracted: {err}")
        if root.is_relative_to(out):
            parser.error("--extracted must not be inside --out (an --overwrite would delete it)")
        return
    if args.download_dir.resolve().is_relative_to(out):
        parser.error("--download-dir must not be inside --out (an --overwrite would delete it)")
    if args.sha256 is not None and not _HEX64.match(args.sha256):
        parser.error(f"--sha256 must be 64 hex digits, got {args.sha256!r}")
    if args.url is None:
        args.url = OFFICIAL_URL
    elif args.sha256 is None:
        parser.error(f"--url {args.url} needs --sha256: a download is never used unverified")
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")


def _reject(
    parser: argparse.ArgumentParser, args: argparse.Namespace, keys: Sequence[str], source: str
) -> None:
    for key in keys:
        if getattr(args, key) is not None:
            parser.error(f"--{key.replace('_', '-')} applies to --source {source} only")


def _data_root(args: argparse.Namespace, workdir: Path) -> tuple[Path, dict | None, dict | None]:
    """Produce the corpus; returns (data root, synthetic config, archive provenance)."""
    from speaker_data.download import OFFICIAL_MD5, OFFICIAL_URL, extract_archive, fetch_archive
    from speaker_data.librispeech import find_data_root
    from speaker_data.synthetic import generate_corpus

    if args.source == "synthetic":
        config = SyntheticConfig(
            seed=args.seed,
            n_speakers=args.n_speakers,
            utts_per_speaker=args.utts_per_speaker,
            min_seconds=args.min_seconds,
            max_seconds=args.max_seconds,
            snr_db_low=args.snr_db[0],
            snr_db_high=args.snr_db[1],
        )
        print(f"generating {config.n_speakers}x{config.utts_per_speaker} synthetic utterances")
        generate_corpus(config, workdir / "corpus")
        return workdir / "corpus", config.as_dict(), None
    if args.extracted is not None:
        return find_data_root(args.extracted), None, None
    md5 = OFFICIAL_MD5 if args.url == OFFICIAL_URL and args.sha256 is None else None
    archive = fetch_archive(args.url, args.download_dir, args.sha256, md5, args.timeout)
    return extract_archive(archive, args.download_dir), None, archive.provenance()


def _build(args: argparse.Namespace, workdir: Path) -> dict:
    """Write corpus (synthetic), manifests, features and hashes into ``workdir``."""
    from speaker_data import featstore, librispeech
    from speaker_data.features import FEATURE_SETTINGS

    data_root, synthetic, archive = _data_root(args, workdir)
    utterances = librispeech.scan_corpus(data_root)
    splits = librispeech.split_by_speaker(utterances, args.split_ratio, args.split_seed)
    speakers = sorted({utt.spk_id for utt in utterances})

    manifests_dir = workdir / "manifests"
    manifests_dir.mkdir()
    for split, utts in splits.items():
        manifest = {
            utt.utt_id: {
                "wav": "{data_root}/" + utt.relpath,
                "length": utt.seconds,
                "spk_id": utt.spk_id,
            }
            for utt in utts
        }
        _write_json(manifests_dir / f"{split}.json", manifest)
    _write_json(manifests_dir / "labels.json", {spk: index for index, spk in enumerate(speakers)})

    features_dir = workdir / "features"
    features_dir.mkdir()
    for split, utts in splits.items():
        print(f"features {split}: {len(utts)} utterances, {args.n_mels} mels", flush=True)
        featstore.write_split(features_dir, split, utts, data_root, args.n_mels)
    featstore.write_train_stats(features_dir)

    print(f"hashing {len(utterances)} audio files", flush=True)
    hashes = {
        "audio": {utt.relpath: sha256_file(data_root / utt.relpath) for utt in utterances},
        "features": _hash_folder(features_dir, workdir),
        "manifests": _hash_folder(manifests_dir, workdir),
    }
    _write_json(workdir / "hashes.json", hashes)
    inside = data_root.resolve().is_relative_to(workdir.resolve())
    return {
        "format_version": FORMAT_VERSION,
        "source": args.source,
        "seed": synthetic["seed"] if synthetic else None,
        "synthetic": synthetic,
        "archive": archive,
        "data_root": data_root.relative_to(workdir).as_posix() if inside else str(data_root),
        "subset": SUBSET,
        "split_seed": args.split_seed,
        "split_ratio": list(args.split_ratio),
        "n_mels": args.n_mels,
        "features": FEATURE_SETTINGS,
        "speakers": len(speakers),
        "counts": {split: len(utts) for split, utts in splits.items()},
        "seconds": {
            split: round(sum(u.seconds for u in utts), 3) for split, utts in splits.items()
        },
        "corpus_sha256": digest_of(hashes["audio"]),
        "features_sha256": digest_of(hashes["features"]),
        "manifests_sha256": digest_of(hashes["manifests"]),
        "versions": _versions(),
    }


def _hash_folder(folder: Path, base: Path) -> dict[str, str]:
    return {
        path.relative_to(base).as_posix(): sha256_file(path)
        for path in sorted(folder.iterdir())
        if path.is_file()
    }


def _versions() -> dict[str, str]:
    """Library versions that determine the bytes written (FLAC encoder, FFT, numpy format)."""
    import numpy
    import soundfile
    import torch

    return {
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "torch": torch.__version__,
        "soundfile": soundfile.__version__,
        "libsndfile": soundfile.__libsndfile_version__,
    }


def _write_json(path: Path, document: object) -> None:
    write_json_atomically(path, document, indent=2)


def main(argv: Sequence[str] | None = None) -> int:
    # Before torch loads (features are computed with it): idle OpenMP threads sleep instead of
    # spinning, which on a shared machine costs more than the parallelism gains.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = _parser()
    args = parser.parse_args(argv)
    _validate(parser, args)
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir()
    try:
        # Any write of the build that a full disk refused is named, with the folder and the fix.
        with disk_full_named(out):
            summary = _build(args, workdir)
            _write_json(workdir / "prepared.json", summary)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
            os.rename(workdir, out)
            shutil.rmtree(old)
        else:
            os.rename(workdir, out)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    counts = ", ".join(f"{k} {v}" for k, v in summary["counts"].items())
    print(f"prepared {out}: {summary['speakers']} speakers; {counts} utterances")
    return 0


if __name__ == "__main__":
    sys.exit(main())
