"""The published-result check names how a run differs, upstream first, from synthetic records.

Each test publishes a small provenance record (`python -m reprohunt.published --write` as a
function call), changes one thing in "this run", and reads the one line the check prints: the
class it starts with and the key, file, trial or metric it names. No workflow runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from hpopt.files import digest_of, sha256_text
from reprohunt import audit, published
from reprohunt.compare import compare
from reprohunt.hunt import configuration, experiment_name
from reprohunt.provenance import data_files
from reprohunt.records import HuntSpec, Provenance, from_document
from reprohunt.result import Result

SPEC: dict[str, Any] = {
    "experiment": "speaker_id",
    "space": {"lr": "loguniform(1e-4, 1e-1)", "dropout": "uniform(0, 0.5)"},
    "algorithm": {"tpe": {"seed": 1}},
    "recipe": {"seed": 3, "numerics": "portable", "code": {"train.py": "0" * 64}},
}
# What the tests' specs leave out: nothing configuration() or experiment_name() reads.
UNREAD = {
    "results": "results/speaker_id",
    "train_env": ".venv/train",
    "storage": {"type": "pickleddb"},
    "max_trials": 3,
    "max_broken": 1,
    "n_workers": 1,
    "heartbeat": 120,
    "data_folder": "results/speaker_id/data",
}


def hunt_spec(document: dict[str, Any]) -> HuntSpec:
    """The hunt spec of `document`, the keys it leaves out filled with unread values."""
    return HuntSpec(**UNREAD | document)


AUDIO = {f"spk{index:02d}/utt.flac": f"{index:064x}" for index in range(32)}
FEATURES = {f"features/{split}.npy": sha256_text(split) for split in ("test", "train", "valid")}
MANIFESTS = {"manifests/labels.json": sha256_text("labels")}
SEEDS = ("1986", "1987")


def trials() -> list[dict[str, Any]]:
    """trials.json as the best step writes it: more fields than a published outcome keeps."""
    return [
        {
            "id": f"trial{number}",
            "status": "completed",
            "params": {"lr": lr, "dropout": 0.1},
            "objective": objective,
            "statistics": {},
            "submit_time": None,
            "start_time": None,
            "end_time": None,
            "duration_s": 12.5,
            "working_dir": f"/tmp/trial{number}",
        }
        for number, lr, objective in ((1, 0.001, 0.31), (2, 0.002, 0.32), (3, 0.003, 0.33))
    ]


def final_run(valid: float, test: float) -> dict[str, Any]:
    """A final run's result document (the result contract's)."""
    return {
        "result_format": 1,
        "objective": {"split": "valid", "metric": "error"},
        "metrics": {"valid": {"error": valid}, "test": {"error": test}},
    }


def final_stage() -> dict[str, Any]:
    """The final stage as provenance records it: two seeds of each arm and their comparison
    (reprohunt.compare's own)."""
    runs = {
        "tuned": {seed: final_run(0.3, 0.35) for seed in SEEDS},
        "untuned": {
            seed: final_run(0.3, test) for seed, test in zip(SEEDS, (0.4, 0.45), strict=True)
        },
    }
    comparison = compare(
        [int(seed) for seed in SEEDS],
        *(
            [Result(Path(f"{arm}-{seed}.json"), runs[arm][seed]) for seed in SEEDS]
            for arm in ("tuned", "untuned")
        ),
    )
    return {
        "seeds": [int(seed) for seed in SEEDS],
        "delivered": {"arm": "tuned", "seed": int(SEEDS[0]), "result": "final/metrics.json"},
        "runs": runs,
        "comparison": comparison.document(),
    }


def environment(name: str) -> dict[str, Any]:
    return {
        "python": f".venv/{name}/bin/python",
        "lock": f"{name}.txt",
        "lock_sha256_at_setup": None,
        "lock_sha256_now": None,
        "pip_freeze": [],
        "pip_freeze_sha256": sha256_text(""),
    }


def provenance(spec: dict[str, Any] = SPEC, hashes: dict[str, Any] | None = None) -> dict:
    """A provenance record whose keys `published.outcome` reads are set from `spec` and
    `hashes`, and the others with unread values."""
    hashes = hashes or {"audio": AUDIO, "features": FEATURES, "manifests": MANIFESTS}
    configured = configuration(hunt_spec(spec))
    best = {"params": {"lr": 0.001, "dropout": 0.1}, "objective": 0.31, "trial_id": "trial1"}
    final = final_stage()
    return {
        "created": "2025-01-01T00:00:00+00:00",
        "results": "results/speaker_id",
        "git": {"commit": "abc123", "dirty": False},
        "environments": {name: environment(name) for name in ("train", "workflow")},
        "hardware": {
            "python": "3.11.0",
            "platform": "Linux",
            "cpu_count": 2,
            "torch": "2.0",
            "torch_cuda": None,
            "cudnn": None,
            "cuda_available": False,
            "gpus": [],
            "nvidia_smi": None,
            "image": {},
            "collect_env": {},
        },
        "numerics": {"cpu": {"model": "Test CPU"}},
        "data": {},
        "data_hashes_sha256": sha256_text(json.dumps(hashes)),
        "data_files_sha256": data_files(hashes),
        "recipe": spec["recipe"],
        "configuration": configured,
        "configuration_sha256": sha256_text(json.dumps(configured, sort_keys=True)),
        "seeds": {"recipe": 3, "orion_algorithm": spec["algorithm"], "final": final["seeds"]},
        "determinism": {},
        "orion": {
            "experiment": "speaker_id-0123abcd",
            "version": 1,
            "storage": {"type": "pickleddb"},
            "space": spec["space"],
            "algorithm": spec["algorithm"],
            "max_trials": 3,
            "max_broken": 1,
            "n_workers": 1,
            "status_counts": {"completed": 3},
            "replay": {"expected": True, "intact": True, "departures": []},
            "trials": trials(),
        },
        "best": best
        | {
            "experiment": "speaker_id-0123abcd",
            "version": 1,
            "selection_rule": "lowest objective",
            "trials_completed": 3,
            "working_dir": "/tmp/trial1",
        },
        "final_metrics": final["runs"]["tuned"][SEEDS[0]],
        "final": final,
        "commands": {},
        "rule_costs": {},
        "scheduler": {"type": "local"},
        "checklist": {},
    }


def typed(record: dict[str, Any]) -> Provenance:
    return from_document(Provenance, record, "the test's record")


def write_run(folder: Path, record: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "provenance.json").write_text(json.dumps(record))
    return folder


@pytest.fixture
def published_file(tmp_path: Path) -> Path:
    """The file `--write` publishes from the synthetic record."""
    path = tmp_path / "published.json"
    results = write_run(tmp_path / "published-run", provenance())
    assert published.main(["--results", str(results), "--published", str(path), "--write"]) == 0
    return path


def line_for(tmp_path: Path, record: dict[str, Any], path: Path) -> str:
    """The verdict on a run whose provenance is `record`."""
    return published.verdict(write_run(tmp_path / "this-run", record), path)


def with_data(features: dict[str, str] | None = None, audio: dict[str, str] | None = None):
    """A record on other prepared data: the same configuration, some file hashes changed."""
    hashes = {
        "audio": AUDIO | (audio or {}),
        "features": FEATURES | (features or {}),
        "manifests": MANIFESTS,
    }
    return provenance(hashes=hashes)


def test_the_published_file_is_format_2_with_trials_in_order(published_file: Path) -> None:
    document = json.loads(published_file.read_text())
    assert document["published_format"] == 2
    assert document["configuration"] == configuration(hunt_spec(SPEC))
    assert "code" not in document["configuration"]["recipe"]
    assert document["numerics"] == "portable"
    assert document["trials"][1] == {
        "status": "completed",
        "params": {"lr": 0.002, "dropout": 0.1},
        "objective": 0.32,
    }
    assert [trial["objective"] for trial in document["trials"]] == [0.31, 0.32, 0.33]
    assert document["final"]["tuned"]["1987"]["test"] == {"error": 0.35}
    assert published.Outcome.from_json(document) == published.outcome(typed(provenance()))


def test_an_identical_run_reproduces_bit_for_bit(tmp_path: Path, published_file: Path) -> None:
    line = line_for(tmp_path, provenance(), published_file)
    assert line == (
        f"reproduced the published result bit for bit: {published_file} "
        "(measured at abc123 on Test CPU)"
    )


def test_another_configuration_names_the_first_differing_key(
    tmp_path: Path, published_file: Path
) -> None:
    spec = copy.deepcopy(SPEC)
    spec["space"]["lr"] = "loguniform(1e-5, 1e-1)"
    # Other data too: the configuration, upstream, is the one named.
    record = provenance(spec, {"features": FEATURES | {"features/train.npy": "f" * 64}})
    line = line_for(tmp_path, record, published_file)
    assert line.startswith(
        "another configuration, nothing to compare: first at configuration.space.lr: "
        "published 'loguniform(1e-4, 1e-1)', this run 'loguniform(1e-5, 1e-1)'"
    )


def test_other_data_names_the_first_differing_file_and_the_count(
    tmp_path: Path, published_file: Path
) -> None:
    changed = {"features/train.npy": "1" * 64, "features/valid.npy": "2" * 64}
    line = line_for(tmp_path, with_data(features=changed), published_file)
    assert line.startswith(
        "did NOT reproduce the published result: same configuration, other prepared data: "
        "first differing file features/train.npy (2 of 5 files differ;"
    )
    assert "hashes only, not the arrays" in line
    assert "`make numerics-check`" in line


def test_a_large_group_is_one_entry_named_with_its_file_count(
    tmp_path: Path, published_file: Path
) -> None:
    document = json.loads(published_file.read_text())
    assert document["data_files_sha256"]["audio/ (32 files)"] == digest_of(AUDIO)
    assert "spk00/utt.flac" not in document["data_files_sha256"]
    line = line_for(tmp_path, with_data(audio={"spk07/utt.flac": "e" * 64}), published_file)
    assert "other prepared data: first differing file audio/ (32 files) (1 of 5 files" in line


def test_another_hunt_names_the_first_differing_trial(tmp_path: Path, published_file: Path) -> None:
    record = provenance()
    record["orion"]["trials"][1]["objective"] = 0.5
    record["orion"]["trials"][2]["objective"] = 0.6
    record["orion"]["trials"][1]["duration_s"] = 99.0  # not part of the outcome
    line = line_for(tmp_path, record, published_file)
    assert line.startswith(
        "did NOT reproduce the published result: same data, another hunt: first differing "
        "trial #2 (in submission order; 3 published, 3 in this run): published completed, "
        "params {'lr': 0.002, 'dropout': 0.1}, objective 0.32, this run completed, "
        "params {'lr': 0.002, 'dropout': 0.1}, objective 0.5"
    )


def test_an_extra_trial_is_a_differing_trial(tmp_path: Path, published_file: Path) -> None:
    record = provenance()
    record["orion"]["trials"].append(trials()[0] | {"id": "trial4"})
    line = line_for(tmp_path, record, published_file)
    assert "another hunt: first differing trial #4 (in submission order; 3 published, 4" in line
    assert "published no such trial, this run completed" in line


def test_another_final_stage_names_the_first_differing_seed_and_metric(
    tmp_path: Path, published_file: Path
) -> None:
    record = provenance()
    record["final"]["runs"]["tuned"]["1987"]["metrics"]["test"]["error"] = 0.375
    record["final"]["runs"]["untuned"]["1987"]["metrics"]["test"]["error"] = 0.5
    line = line_for(tmp_path, record, published_file)
    assert line.startswith(
        "did NOT reproduce the published result: same best, another final stage: first "
        "difference: final.tuned.1987.test.error: published 0.35, this run 0.375"
    )


def format_1(record: dict[str, Any]) -> dict[str, Any]:
    """The file `--write` gave before format 2, from the same record."""
    outcome = published.outcome(typed(record))
    return {
        "published_format": 1,
        "experiment": outcome.experiment,
        "numerics": outcome.numerics,
        "data_hashes_sha256": outcome.data_hashes_sha256,
        "best": outcome.best,
        "final": outcome.final,
        "verdict": outcome.verdict,
        "measured": {"commit": "old", "dirty": False, "cpu": None, "created": "2024"},
    }


def test_a_format_1_file_is_compared_by_experiment_and_called_older(tmp_path: Path) -> None:
    path = tmp_path / "published.json"
    document = format_1(provenance())
    path.write_text(json.dumps(document))
    line = line_for(tmp_path, provenance(), path)
    assert line.startswith("reproduced the published result bit for bit")
    assert line.endswith("the published file is of an older format (1): republish it with --write")
    document["final"]["tuned"]["1986"]["valid"]["error"] = 0.25
    path.write_text(json.dumps(document))
    line = line_for(tmp_path, provenance(), path)
    assert line.startswith(f"did NOT reproduce the published result {path}")
    assert "first difference: final.tuned.1986.valid.error: published 0.25, this run 0.3" in line
    document["experiment"] = "speaker_id-0000abcd"
    path.write_text(json.dumps(document))
    line = line_for(tmp_path, provenance(), path)
    assert line.startswith("another configuration or other prepared data, nothing to compare")
    assert "is speaker_id-0000abcd" in line
    assert "the published file is of an older format (1): republish it with --write" in line


def test_a_record_without_a_configuration_is_named_not_compared(
    tmp_path: Path, published_file: Path
) -> None:
    record = provenance()
    del record["configuration"]
    line = line_for(tmp_path, record, published_file)
    assert line.startswith("cannot compare with the published result: ")
    assert "predates configuration records" in line


def test_the_audit_reports_the_published_line_as_information(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(published, "FOLDER", tmp_path / "published")
    results = write_run(tmp_path / "results" / "speaker_id", provenance())
    assert audit.published_check(results) == []
    published.FOLDER.mkdir()
    spec = copy.deepcopy(SPEC)
    spec["algorithm"] = {"random": {"seed": 1}}
    publisher = write_run(tmp_path / "publisher", provenance(spec))
    path = published.FOLDER / "speaker_id.json"
    assert published.main(["--results", str(publisher), "--published", str(path), "--write"]) == 0
    (found,) = audit.published_check(results)
    assert found["status"] == audit.INFO
    assert found["details"][0].startswith(
        "another configuration, nothing to compare: first at configuration.algorithm.random"
    )


def test_data_files_lists_small_groups_by_path_and_digests_large_ones() -> None:
    found = data_files({"audio": AUDIO, "features": FEATURES})
    assert found == {"audio/ (32 files)": digest_of(AUDIO)} | FEATURES
    assert data_files({"audio": dict(list(AUDIO.items())[:20])}) == dict(list(AUDIO.items())[:20])


def test_the_experiment_name_hashes_the_configuration_and_the_data_as_before(
    tmp_path: Path,
) -> None:
    # The name this spec and data had before configuration() was split out of experiment_name.
    (tmp_path / "hashes.json").write_text(
        json.dumps({"features": {"features/train.npy": "ab" * 32}})
    )
    spec = {
        "experiment": "speaker_id",
        "space": {"lr": "loguniform(1e-4, 1e-1)"},
        "algorithm": {"tpe": {"seed": 1}},
        "recipe": {"seed": 3, "code": {"train.py": "x"}, "numerics": "portable"},
    }
    assert experiment_name(hunt_spec(spec), tmp_path) == "speaker_id-8dabb655"
    assert (
        experiment_name(hunt_spec(spec | {"gpus_per_trial": 2}), tmp_path) == "speaker_id-92974ed8"
    )
    assert experiment_name(hunt_spec(spec | {"start_with_train_yaml": True}), tmp_path) == (
        "speaker_id-5ef1a702"
    )
